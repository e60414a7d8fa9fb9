"""The replication grid on real assets: Fashion-MNIST (ViT teacher -> Vim) and SmolLM2-135M (-> Mamba-2 LM).

The grid is fixed here, before any of its runs is looked at: methods, fractions, seeds, step and token budgets, and
every method's loss terms. It is run in parts (a GPU session runs one or a few), many runs at once on one GPU, and
each finished run's metrics are compacted into one JSON record per run under `results/replication/records/`, from
which `results/make_replication.py` writes `results/REPLICATION.md`.

    python -m bench.studies.replication plan                      # every part and its cells
    python -m bench.studies.replication run --part V10 --workers 12 --out runs/replication \\
        --fashion <dir with the four idx files>                   # run a part's missing cells
    python -m bench.studies.replication collect --out runs/replication   # metrics.json -> records/*.json
    python -m bench.studies.replication run --part V10 --workers 8 --budget 500 --records <dir> ...  # a time slice, then collect
    python -m bench.studies.replication run --part V01,V10 --labels mohawk --workers 6 ...   # several parts, one pool
    python -m bench.studies.replication run --part LMAIN --workers 1 --doc_root <dir with python3.11/ and linux-doc-6.1/> ...

Cells with a committed record (`results/replication/records/`) count as finished (`--rerun_recorded` runs them again).

A part that has records runs its other cells with the kernels those records name (`pins_for`: each op's path and the
Triton scan's launch settings, through `CAB_BENCH_BACKENDS` and `CAB_BENCH_SCAN*`), so that a change of the package's
defaults between two calls does not split one table between two sets of kernels; `--no_pin` runs today's defaults.
Records from before the launch settings were recorded pin the paths only, and `results/REPLICATION.md` lists each
part's kernels.

Like-for-like: the stage of every method that trains on the end task uses the same loss terms and weights
(vision: KL at tau=1 with weight 1, no label CE, as in the CAB paper's vision recipe; language: KL 1 + CE 1), so
methods differ only in what they add (an alignment stage, an initialisation, an orientation stage, a Hedgehog stage).
`vanilla` (CE on labels, no teacher) and `hard_kd` (CE on the teacher's argmax) are defined by their loss and keep it.
The options that make this explicit are written into every cell's `method_opts`, so the records say what ran even if
a default changes later. HedgeMamba's stage 2 (CE only in the paper) takes `kl=1, ce=1` here for the same reason.

Decided before the first record, from throughput only (no grid cell had run): the teacher is the bundled
`default:fashion` as it is (test top-1 90.1%, 23 of 50 planned epochs; retraining to the 92% aim was not worth a
session's device time, and every method distils from the same teacher). Measured on one H200 (the logs in `results/replication/probe/`:
200-step runs, 12 processes at once, ~1.3 s a step each): about 9 steps/s summed over the processes for CAB at batch 128,
i.e. the GPU is the limit at ~0.1 s of kernel time a step, half of it the Triton scan's backward
(`bench/results/profile_fashion_step_h200.json`). At that rate the vision grid (90 cells x 2,000 steps) needs ~5.5 h
of one GPU; the parts are therefore run over several sessions, each part no longer than one session's device time.
A cell outlives one device call (a call is limited to minutes; a cell at 8 processes takes ~20 minutes), so every
cell checkpoints every 200 steps (language: 100), SIGTERM makes the running cells checkpoint at their step and stop
(`timeout -s TERM`), and the next call resumes them exactly, as long as the machine keeps its disk. Checkpointing does
not change what a run computes (train's resume tests; tests/test_replication.py for this runner).

Measured later on the same H200 (`results/replication/device_logs/`), after the scan-backward and fused-AdamW changes
(a CAB step alone 147 ms) and under CUDA MPS (`nvidia-cuda-mps-control -d`, so that the processes' small kernels
overlap): 10 processes ran ~1.40 steps/s each and 8 ran ~1.65-1.74, i.e. ~14 steps/s in total either way: the GPU is
the limit from ~8 processes, and the vision grid needs ~3.6 h of it. Those first V10 cells were lost: the machine was
released between two calls before they finished, and checkpoints do not come back from it.

Measured on 2026-12-02 (`results/replication/device_logs/2026-12-02b_*`): with the 'seq' Triton scan kernels a CAB
step's GPU time is 57 ms (was 83), and 3 soft_kd cells at once ran 5.4-5.6 steps/s each (a whole cell in 5.5 min).
But 12 cells at once, 3 of them MOHAWK, ran 0.49 steps/s each while MOHAWK's orientation stage took ~15 s a step:
its per-channel transfer matrices (b x E x l x l float32 per direction and layer, once per state in eager PyTorch)
took most of the GPU. Compiled on CUDA they took 1.39 s a step (eager 4.34 s; a KD step 0.15 s; read off a
2026-12-02 profile whose JSON did not come back), and 21.6 ms forward + backward per direction and layer
(`bench/results/device_logs/2026-12-03b_*`). MOHAWK's orientation now averages the matrices per head by a block
factorisation (`models.mamba.head_scan_matrix`: matrix products, no per-channel matrices); until that is measured
on the GPU, MOHAWK cells run apart from the others. Each worker now takes its share of the cores for torch's CPU threads.

Measured on 2026-12-03 (`results/replication/device_logs/2026-12-03[d-f]_*`): 6 KD cells at once (V01) ran 4.1-4.4
steps/s each, a cell in 497-518 s, so one call of under 600 s holds 6 KD cells. Language, a probe of LMAIN's soft_kd
(`--max_steps 60`, alone on the GPU; `results/replication/probe/`): 2.6-2.8 steps/s of 32 x 512 tokens (~44K
tokens/s, the SSD on its chunked path), 94-96 s a probe including the GGUF's load and the tokenised corpus; a whole
LMAIN cell (1,280 steps) therefore takes ~9 minutes alone. How many language cells share the GPU well is not measured
yet. The 10/90 HedgeMamba split is LMAIN's hedgemamba cell at seed 0 (the same configuration), so LSPLIT holds the
other two splits only.

Measured on 2026-12-04 (`results/replication/device_logs/2026-12-04[a-c]_*`): V05's cab and mohawk cells (3 each, 6
workers) took two calls: CAB ran 1.45 steps/s each while MOHAWK's orientation stage ran beside it (2.3 averaged over
the second call, most of which came after); MOHAWK's 101 orientation steps (per-head transfer matrices of 48 scans)
took about 600 s of its cell's 960-s wall time, its 1,899 other steps the rest. V20's vanilla and soft_kd cells, the
first of that part and so on the package's defaults of the day (the Triton causal conv, the scan's 'staged' I/O for wide launches), ran 5.4-5.7 steps/s each with
6 workers (a cell in 373-391 s) where V01's KD cells on the chunked conv ran 4.1-4.4: the new defaults are faster,
and each part keeps its own kernels (`results/REPLICATION.md`, Kernels).

Measured on 2026-12-04/07: 6 MOHAWK cells at once (V01, V10) ran their orientation at 0.11 steps/s each and reached
step 58 of 101 in a 556-s call, whose checkpoints were then lost with the machine (its log did not come back either:
these two numbers are from its printed output). The per-head matrices now come from
Triton kernels (`ops.triton_matrix`) on CUDA: the orientation step alone took 501 ms against 2,033 ms on an H100
(`bench/results/profile_fashion_mohawk_triton_h100.json`), so MOHAWK cells can share a call with the others again.
V05's MOHAWK records were made with the eager blocks (the same function, rounded in another order);
`results/REPLICATION.md` says which records used which.
"""
from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "results" / "replication" / "records"
SESSIONS = "_sessions"                 # under RECORDS: one JSON per runner call (its wall time holding the GPU)

SEEDS = (0, 1, 2)                    # vision; chosen before any run
LM_SEEDS = (0, 1)                    # language main comparison
FRACS = (0.01, 0.05, 0.1, 0.2)

# Vision: equal step budgets at every fraction (the CAB paper scales epochs inversely with the fraction: equal compute).
VISION = dict(task="vision", teacher="default:fashion", student="vim_fashion", batch_size=128, max_steps=2000, lr=1e-3,
              weight_decay=0.05, warmup_frac=0.05, augment=True, precision="auto", eval_teacher=True, ckpt_every=200)
# The end-task stage of every KD method: KL (tau 1, weight 1), no CE.
V_KD = dict(tau=1.0, ce=0.0)
VISION_METHODS = {
    "vanilla": ("vanilla", {}),
    "soft_kd": ("soft_kd", V_KD),
    "hard_kd": ("hard_kd", dict(ce=0.0)),
    "attn_reuse": ("attn_reuse", V_KD),
    "mohawk": ("mohawk", V_KD),
    "cab": ("cab", dict(kl=1.0, ce=0.0, lambda_align=3.0, tau=1.0)),
}
VISION_ABLATIONS = {                 # Table 5 and Table 7 of the CAB paper, at 10%
    "cab_b_only": ("cab_b_only", dict(kl=1.0, ce=0.0, lambda_align=3.0)),
    "cab_c_only": ("cab_c_only", dict(kl=1.0, ce=0.0, lambda_align=3.0)),
    "cab_shared_bridge": ("cab_shared_bridge", dict(kl=1.0, ce=0.0, lambda_align=3.0)),
    "cab_default_init": ("cab_default_init", dict(kl=1.0, ce=0.0, lambda_align=3.0)),
    "cab_align_until_0.5": ("cab", dict(kl=1.0, ce=0.0, lambda_align=3.0, align_until=0.5)),
    "cab_align_until_0.25": ("cab", dict(kl=1.0, ce=0.0, lambda_align=3.0, align_until=0.25)),
}

# Language: SmolLM2-135M -> a Mamba-2 LM of its layout, on the documentation corpus. 1,280 steps of 32 x 512 tokens
# = 21.0M tokens a run (the issue asks for at least 20M).
LANGUAGE = dict(task="language", teacher="default:smollm2", student="mamba2_smollm2", data="docs", seq_len=512,
                batch_size=32, max_steps=1280, lr=1e-3, weight_decay=0.05, warmup_frac=0.05, precision="auto",
                eval_teacher=True, ckpt_every=100)
L_KD = dict(tau=1.0, ce=1.0)         # the end-task stage of every KD method: KL 1 + CE 1 (their KL weight is 1 by definition)
L_HEDGE = dict(kl=1.0, ce=1.0, tau=1.0)   # the same for HedgeMamba's stage 2 (the package default; the paper's is kl 0)
LANGUAGE_METHODS = {
    "vanilla": ("vanilla", {}),
    "soft_kd": ("soft_kd", L_KD),
    "attn_reuse": ("attn_reuse", L_KD),
    "mohawk": ("mohawk", L_KD),
    "cab": ("cab", dict(two_stage=True, align_share=0.1, stage2_kl=1.0, stage2_ce=1.0)),
    "hedgemamba": ("hedgemamba", dict(stage1_share=0.1, **L_HEDGE)),     # the paper's stage 2 is CE only; here KL 1 + CE 1 as all
    "hedgemamba_one_step": ("hedgemamba_one_step", L_HEDGE),
}
# HedgeMamba's stage split at seed 0. The 10/90 split is LMAIN's `hedgemamba` cell at seed 0 (the same configuration:
# stage1_share 0.1), so LSPLIT runs only the other two and the report reads 10/90 from that cell.
HEDGE_SPLITS = {"hedgemamba_50_50": 0.5, "hedgemamba_90_10": 0.9}
HEDGE_SPLIT_MAIN = ("hedgemamba", 0.1)     # the LMAIN label that is the 10/90 split, and its stage-1 share


def _cell(base:dict, label:str, method:str, opts:dict, frac:float, seed:int, part:str)->dict:
    cfg = {**base, "method": method, "method_opts": dict(opts), "data_frac": frac, "seed": seed,
           "run_name": f"{base['task']}-{label}-f{frac:g}-s{seed}"}
    return dict(part=part, label=label, config=cfg)


def parts()->dict:
    "part name -> list of cells (label, config); the whole pre-registered grid."
    out = {}
    for f in FRACS:
        name = f"V{round(f * 100):02d}"
        out[name] = [_cell(VISION, lab, m, o, f, s, name) for lab, (m, o) in VISION_METHODS.items() for s in SEEDS]
    out["VABL"] = [_cell(VISION, lab, m, o, 0.1, s, "VABL") for lab, (m, o) in VISION_ABLATIONS.items() for s in SEEDS]
    out["LMAIN"] = [_cell(LANGUAGE, lab, m, o, 1.0, s, "LMAIN") for lab, (m, o) in LANGUAGE_METHODS.items() for s in LM_SEEDS]
    out["LSPLIT"] = [_cell(LANGUAGE, lab, "hedgemamba", dict(stage1_share=sh, **L_HEDGE), 1.0, 0, "LSPLIT")
                     for lab, sh in HEDGE_SPLITS.items()]
    return out


def _with_data(cell:dict, out:Path, fashion:str|None, doc_root:str|None=None)->dict:
    cfg = dict(cell["config"], out_dir=str(out))
    if cfg["task"] == "vision" and "data" not in cfg:          # the grid's vision cells: Fashion-MNIST
        cfg["data"] = f"fashion_mnist:{fashion}" if fashion else "fashion_mnist"
    if doc_root and str(cfg.get("data", "")).startswith("docs"):   # the language cells: where the doc sources lie
        cfg["doc_root"] = str(doc_root)
    return cfg


def _slim(run_dir:Path):
    "Drop a finished run's checkpoints (tens of MB each); its JSON, logs and figures stay. The run is still reused."
    for f in run_dir.rglob("*"):
        if f.is_file() and f.suffix in (".safetensors", ".pt", ".bin") and f.stat().st_size > 1 << 20: f.unlink()


def _rate(run_dir:Path)->float|None:
    "Steady-state training steps per second from metrics.jsonl (first to last train line; start-up excluded)."
    from cab_bench.analysis import read_log
    tr = [r for r in read_log(run_dir) if r.get("kind") == "train"]
    if len(tr) < 2 or tr[-1]["time"] <= tr[0]["time"]: return None
    return (tr[-1]["step"] - tr[0]["step"]) / (tr[-1]["time"] - tr[0]["time"])


STOP = "STOP"                        # under <out>/_logs: present while a stop is under way; cells not yet started are left


class _Stopped(BaseException):
    "SIGTERM outside training (start-up, final evaluation): the cell ends here and its checkpoints stay for the next call."


def _stop_now(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)        # once: a second TERM must not interrupt the clean-up
    raise _Stopped()


def _idle_worker():
    "Pool initializer: an idle worker ignores SIGTERM (it holds no cell; `_worker` installs the real handler)."
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _done_frac(run_dir:Path, max_steps:int)->float:
    "Share of a cell's steps its newest checkpoint holds (0 for a cell not started, or one whose `latest` is damaged)."
    from cab_bench.core import CabError
    from cab_bench.train import latest_checkpoint
    try: ck = latest_checkpoint(run_dir / "train")
    except CabError: return 0.0                          # train() itself recovers it on resume
    return 0.0 if ck is None else min(1.0, int(ck.name[5:]) / max_steps)


def _quiet_exit():
    "Registered by `_end_of_cell`: from here on the worker has sent its result, and a SIGTERM simply ends it."
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _end_of_cell():
    """After a cell, whatever its end: a SIGTERM is ignored until the result has gone to the pool, then (at the
    process's exit, before the exit handlers registered earlier, which run later) it ends the worker at once. Without
    this, the pool's teardown met `_stop_now` inside torch's exit handler (its compile workers' shutdown, which can
    wait minutes): a traceback per worker, and a worker that outlived its cell."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    atexit.register(_quiet_exit)


def _worker(args):
    try: return _run_cell(args)
    finally: _end_of_cell()


def _run_cell(args):
    cfg, log, gpu, t_start, deadline, est, slim, env = args
    os.environ.update(env)         # the pinned kernels (`pins_for`): before cab_bench is imported in this process
    if gpu is not None: os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)      # before torch is imported in this process
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, _stop_now)     # train() replaces it while training (checkpoint at the step, then stop)
    t0 = time.time()
    d = Path(cfg["out_dir"]) / cfg["run_name"]
    skip = dict(run_name=cfg["run_name"], ok=None, seconds=0.0, gpu=gpu)
    # checked after the handler is in place: a SIGTERM before it was ignored (`_idle_worker`), but the STOP file is
    # written before any SIGTERM is sent, so no cell starts after a stop
    if (Path(log).parent / STOP).exists(): return dict(skip, why="a stop was requested")
    left = est * (1 - _done_frac(d, cfg["max_steps"])) if est else None
    if deadline and left and t0 - t_start + left > deadline:          # would not finish in this session: leave it
        return dict(skip, why="would pass the deadline")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    from cab_bench.train import TrainingStopped
    try:
        with open(log, "a") as f:                                  # a resumed cell's log continues the earlier one
            import contextlib
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                from cab_bench.experiment import DistillConfig, run
                m = run(DistillConfig.from_dict(cfg))
        rate = _rate(d)
        if slim: _slim(d)
        return dict(run_name=cfg["run_name"], ok=True, seconds=time.time() - t0, student=m.get("student"), gpu=gpu, rate=rate)
    except (TrainingStopped, _Stopped) as e:                       # asked to stop: its checkpoints stay, the next call resumes
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        step = getattr(e, "step", None)
        return dict(skip, seconds=time.time() - t0, why=f"stopped at step {step}" if step else "stopped before/after training")
    except Exception as e:                                     # one failing cell must not stop the others
        with open(log, "a") as f: f.write("\n" + traceback.format_exc())
        return dict(run_name=cfg["run_name"], ok=False, seconds=time.time() - t0, error=f"{type(e).__name__}: {e}", gpu=gpu)


PINNED_OPS = ("selective_scan", "causal_conv1d", "ssd_scan")   # the ops whose path a begun part keeps
_LAUNCH_PARTS = (("default", None, "CAB_BENCH_SCAN"), ("wide", "from_rows", "CAB_BENCH_SCAN_WIDE"),
                 ("long", "from_L", "CAB_BENCH_SCAN_LONG"))


def kernel_signature(report:dict|None)->dict|None:
    """What of a run's `backend_report` decides its numbers beyond its configuration and code: each op's path and, where
    the Triton scan served, its launch settings (`launch` None: the record predates their recording). None: no report.
    Settings a record leaves out take the values they had before they existed (`SCAN_SEQ_IO` 'step')."""
    if not report: return None
    sig = {op: (report.get(op) or {}).get("path") for op in PINNED_OPS}
    if sig["selective_scan"] == "triton":
        launch = (report.get("selective_scan") or {}).get("launch")
        if launch:
            io = launch.get("default", {}).get("SCAN_SEQ_IO", "step")
            launch = {k: dict({"SCAN_SEQ_IO": io}, **(launch.get(k) or {})) for k, _, _ in _LAUNCH_PARTS}
        sig["launch"] = launch
    return sig


def part_signature(records:list)->tuple[dict|None, str]:
    """The kernel signature a part's remaining cells should repeat, from its records (`kernel_signature` of each),
    and a line saying what was found: the most common signature (its launch settings only where recorded)."""
    sigs = [kernel_signature((r.get("metrics") or {}).get("backend_report")) for r in records]
    known = [x for x in sigs if x is not None]
    if not known: return None, "no record of this part says its kernels: the current defaults run"
    keys = [json.dumps(x, sort_keys=True) for x in known]
    best = max(set(keys), key=keys.count)
    pin = json.loads(best)
    note = f"{keys.count(best)} of {len(records)} records"
    if len(set(keys)) > 1: note += f" ({len(set(keys))} different signatures among the others: the part is mixed)"
    if pin.get("selective_scan") == "triton" and not pin.get("launch"):
        note += "; their scan launch settings were not recorded, so the scan runs with today's"
    return pin, note


def pin_env(sig:dict|None)->dict:
    """Environment variables that make a process take `sig`'s paths (`CAB_BENCH_BACKENDS`) and the Triton scan's
    recorded launch settings (`CAB_BENCH_SCAN`, `..._WIDE`, `..._LONG`); {} for None."""
    if not sig: return {}
    env = {"CAB_BENCH_BACKENDS": json.dumps({op: sig[op] for op in PINNED_OPS if sig.get(op)}, sort_keys=True)}
    for part, key, var in _LAUNCH_PARTS if sig.get("launch") else ():
        d = dict(sig["launch"][part])
        if key:
            d[key] = d.get(key) if d.get(key) is not None else 2 ** 62      # None (never) as a threshold no run reaches
        env[var] = json.dumps(d, sort_keys=True)
    return env


def read_records(recorded:Path|None)->list:
    "Every run record under `recorded` ([] for None or a folder that does not exist)."
    return [json.loads(p.read_text()) for p in sorted(recorded.glob("*.json"))] if recorded is not None and recorded.is_dir() else []


# A part whose rows are read against another part's cells (the Table 5/7 ablations against V10's `cab`; the 50/50 and
# 90/10 splits against LMAIN's 10/90 cell) takes that part's kernels until it has records of its own.
PIN_LIKE = {"VABL": "V10", "LSPLIT": "LMAIN"}


def pins_for(names:list, every:list)->tuple[dict, list]:
    """The pinned environment for a call that runs parts `names` (`every`: the run records), and a line per part.
    A part with no records of its own pins like the part its rows are compared with (`PIN_LIKE`).
    Parts that would pin different kernels cannot share one pool of workers."""
    envs, lines = {}, []
    for n in names:
        own = [r for r in every if r.get("part") == n]
        ref = PIN_LIKE.get(n) if not own else None
        sig, note = part_signature(own or [r for r in every if r.get("part") == ref])
        if ref and sig is not None: note = f"none of its own; like part {ref}, its reference: {note}"
        envs[n] = pin_env(sig)
        lines.append(f"kernels of part {n}: {note}" + (f"; pinned {envs[n]}" if envs[n] else ""))
    distinct = {json.dumps(e, sort_keys=True) for e in envs.values()}
    if len(distinct) > 1:
        raise ValueError(f"part: {','.join(names)} would pin different kernels ({'; '.join(lines)}); run these parts in separate calls")
    return (next(iter(envs.values())) if envs else {}), lines


def estimate_cell_seconds(cells:list, every:list)->float|None:
    """Seconds a cell of `cells` is expected to train: the median time per step of the recorded runs of the same task
    (at the concurrency they ran with) times the cell's steps; None without such records. A run's time is the larger of
    its `run_time` (the last process's run, evaluation included) and its `wall_time` (training summed over every
    resumed call): a resumed run's `run_time` covers its last call only. Where records of the cells' own methods
    exist, only those count (CAB's step costs more than soft_kd's). The default of `est` when a deadline is given."""
    if not cells: return None
    task, steps = cells[0]["config"]["task"], max(c["config"]["max_steps"] for c in cells)
    methods = {c["config"].get("method") for c in cells}
    secs = lambda m: max(m.get("run_time") or 0, m.get("wall_time") or 0)
    ms = [m for m in (r.get("metrics") or {} for r in every) if m.get("task") == task and m.get("steps") and secs(m) > 0]
    ms = [m for m in ms if m.get("method") in methods] or ms
    per = sorted(secs(m) / m["steps"] for m in ms)
    return per[len(per) // 2] * steps if per else None


def _gpu_count()->int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
        return sum(1 for l in out.splitlines() if l.startswith("GPU "))
    except Exception: return 0


def run_part(name:str, out:Path, workers:int, fashion:str|None, limit:int|None=None, max_steps:int|None=None,
             gpus:int|None=None, deadline:float|None=None, est:float|None=None, slim:bool=True, labels=None,
             budget:float|None=None, recorded:Path|None=RECORDS, pin:bool=True, doc_root:str|None=None)->list:
    """Run a part's cells (`name`: a part, or several comma-separated) that have no metrics.json yet, `workers` processes at once, spread over `gpus` GPUs.
    A cell whose record is in `recorded` (the committed records; None: none) counts as finished, so that a fresh
    machine, whose `out` holds nothing yet, does not run it again. `max_steps` shortens every cell (a throughput probe: its runs are named `...-probe<N>` and are not grid cells).
    With `deadline` (seconds from now) and `est` (seconds a whole cell takes; None: `estimate_cell_seconds` from the
    records), a cell is started only if what is left of
    it (after its newest checkpoint) can finish. On SIGTERM the running cells checkpoint at their step and end, and the
    cells not yet started are left; the next call resumes them. `budget` (seconds) sends that stop itself.
    With `pin`, a part that has records runs its other cells with the kernels those records name (`pins_for`), so that
    a change of the package's defaults does not split a table between two sets of kernels. `doc_root`: the folder
    holding the Debian documentation sources for the language cells (default: `$CAB_BENCH_DOC_ROOT`, else
    /usr/share/doc); it is where the data are read, not what they are, so a cell resumes under another one."""
    t_start = time.time()
    if doc_root is not None:          # checked here, before any worker starts, by the package's own rule
        from cab_bench.core import CabError
        from cab_bench.data import doc_sources
        doc_root = str(Path(doc_root).expanduser().resolve())
        try: doc_sources(root=doc_root)
        except CabError as e: raise ValueError(f"doc_root={doc_root!r}: {e}") from e
    grid = parts()
    names = name.split(",")                 # several parts at once share one pool of workers
    for n in names:
        if n not in grid: raise ValueError(f"part: {n!r} is not a part of the grid; the parts are {', '.join(sorted(grid))}")
    cells = [c for n in names for c in grid[n] if labels is None or c["label"] in labels]
    if max_steps is not None:
        cells = [dict(c, config=dict(c["config"], max_steps=max_steps, run_name=f"{c['config']['run_name']}-probe{max_steps}"))
                 for c in cells]
    missing = [c for c in cells if not (out / c["config"]["run_name"] / "metrics.json").exists()
               and not (recorded is not None and max_steps is None and (recorded / f"{c['config']['run_name']}.json").exists())]
    todo = missing[:limit]
    # the records that say a part's kernels and a cell's time: the committed ones also where they do not count as finished
    every = read_records(recorded if recorded is not None else RECORDS)
    if deadline and est is None and todo:
        est = estimate_cell_seconds(todo, every)
        print(f"deadline {deadline:.0f} s: a whole cell is taken to need {est:.0f} s (the median time a step of the "
              "task's records, of the cells' own methods where there are any)" if est else "deadline: no record to estimate a cell's time from; every cell starts", flush=True)
    env = {}
    if pin:          # begun parts repeat the kernels their records name (paths, scan launch settings), in the workers
        env, lines = pins_for(names, every)
        for line in lines: print(line, flush=True)
    ngpu = _gpu_count() if gpus is None else gpus
    print(f"part {name}: {len(cells)} cells, {len(cells) - len(missing)} finished, running {len(todo)} with {workers} workers"
          f" on {ngpu or 'no'} GPU(s)", flush=True)
    jobs = [(_with_data(c, out, fashion, doc_root), str(out / "_logs" / f"{c['config']['run_name']}.log"),
             (i % ngpu) if ngpu else None, t_start, deadline, est, slim, env) for i, c in enumerate(todo)]
    # each worker's share of the cores for torch's CPU threads, unless OMP_NUM_THREADS is set already: one thread per
    # core in every worker oversubscribes the machine many times over (spinning OpenMP threads slow the Python threads
    # that launch the GPU's kernels). The spawned workers inherit it; CPU results can depend on it, GPU ones do not.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // max(1, min(workers, len(todo) or 1)))))
    stop_file = out / "_logs" / STOP
    stop_file.parent.mkdir(parents=True, exist_ok=True)
    stop_file.unlink(missing_ok=True)

    def on_term(signum, frame):       # SIGTERM (a job's time limit): running cells checkpoint and end, the rest wait
        if not stop_file.exists():
            stop_file.write_text(f"SIGTERM at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            print("SIGTERM: running cells write a checkpoint at their step and stop; the others are left", flush=True)
        for ch in mp.active_children():
            try: os.kill(ch.pid, signal.SIGTERM)
            except ProcessLookupError: pass
    old = signal.signal(signal.SIGTERM, on_term)
    old_alarm = signal.signal(signal.SIGALRM, on_term)          # `budget`: the same stop, from a timer
    if budget: signal.alarm(max(1, int(budget)))
    done = []
    # the call's time record exists from the start and is rewritten as each cell ends: a call killed from outside
    # (past a job's limit, before its own stop finished) still leaves its time and the cells that had ended
    session = lambda complete: _write_session(out, name, t_start, workers, ngpu, todo, done, complete)
    session(False)
    pool = mp.get_context("spawn").Pool(workers, initializer=_idle_worker, maxtasksperchild=1)
    try:
        for r in pool.imap_unordered(_worker, jobs):
            done.append(r)
            session(False)
            if r["ok"] is None: print(f"left {r['run_name']}: {r['why']}", flush=True); continue
            print(("ok  " if r["ok"] else "ERR ") + f"{r['run_name']} gpu={r['gpu']} {r['seconds']:.0f}s "
                  + (f"student={r['student']} steps/s={r.get('rate') or 0:.2f}" if r["ok"] else r["error"]), flush=True)
    finally:
        # every result is in (or the call is failing): the pool is ended at once, not joined, since a pool of
        # one-task workers has begun spawning fresh idle ones, which a join would wait for (seconds each)
        signal.alarm(0)
        pool.terminate(); signal.signal(signal.SIGTERM, old); signal.signal(signal.SIGALRM, old_alarm)
        stop_file.unlink(missing_ok=True)
        session(True)
    return done


def _write_session(out:Path, part:str, t_start:float, workers:int, ngpu:int, todo:list, done:list, complete:bool=True):
    """One JSON per call of `run_part` under out/_logs/sessions/: when it ran, for how long (the GPU time this part
    held, its runs sharing the GPUs), with how many processes, which cells it ran and how each ended. Written while
    the call runs too (`complete` false: the time so far, cells not ended yet 'running or waiting')."""
    end = {r["run_name"]: ("finished" if r["ok"] else "failed" if r["ok"] is False else r["why"]) for r in done}
    rest = "not reached" if complete else "running or waiting"
    rec = dict(part=part, started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)), started_unix=round(t_start, 3),
               seconds=round(time.time() - t_start, 1), complete=complete, workers=workers, gpus=ngpu, machine=_gpu(),
               cells={c["config"]["run_name"]: end.get(c["config"]["run_name"], rest) for c in todo})
    d = out / "_logs" / "sessions"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{part.replace(',', '+')}-{time.strftime('%Y%m%dT%H%M%S', time.localtime(t_start))}-{os.getpid()}.json").write_text(json.dumps(rec, indent=1))


def _commit()->str:
    try: return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except Exception: return os.environ.get("CAB_BENCH_COMMIT", "unknown")


def _gpu()->str:
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception: return "unknown"


def portable(rec:dict)->dict:
    """A record without the machine's own folders: a `fashion_mnist:<folder>` source (a copy of the four idx files on
    the machine that ran it; the subset's sha256 stays in the record) is written as `fashion_mnist`, and an absolute
    `out_dir` (the runner's `--out`) as `runs/<its name>`, the form of the runner's default; a `doc_root` (where the
    language cells read the doc sources; the corpus's sha256 stays) is dropped and named `<doc root>` in the data's
    description, and a quoted absolute folder there (the tokenizer's, inside the teacher's package) becomes
    `<package folder>/<its last part>`."""
    cfg, data = rec.get("config", {}), (rec.get("metrics") or {}).get("data") or {}
    root = cfg.pop("doc_root", None)
    if isinstance(data.get("description"), str):
        desc = data["description"].replace(root, "<doc root>") if isinstance(root, str) else data["description"]
        data["description"] = re.sub(r"'(?:/|~/)[^']*/([^/']+)'", r"'<package folder>/\1'", desc)
    if isinstance(cfg.get("out_dir"), str) and os.path.isabs(cfg["out_dir"]):
        cfg["out_dir"] = f"runs/{Path(cfg['out_dir']).name}"
    spec = cfg.get("data")
    if isinstance(spec, str) and spec.startswith("fashion_mnist:"):
        folder = spec.split(":", 1)[1]
        cfg["data"] = "fashion_mnist"
        if data.get("spec") == spec: data["spec"] = "fashion_mnist"
        if isinstance(data.get("description"), str):
            data["description"] = data["description"].replace(f"({folder})", "(a copy of the standard idx files)")
    return rec


def collect(out:Path, records:Path=RECORDS, commit:str|None=None)->int:
    "Compact every finished run of the grid under `out` into records/<run_name>.json (the report's only input)."
    from cab_bench.guard import read_json
    records.mkdir(parents=True, exist_ok=True)
    commit, gpu, n = commit or _commit(), _gpu(), 0
    for part, cells in parts().items():
        for c in cells:
            d = out / c["config"]["run_name"]
            if not (d / "metrics.json").exists(): continue
            m, cfg = read_json(d / "metrics.json", "run metrics"), read_json(d / "config.json", "run config")   # damaged: named
            keep = {k: m.get(k) for k in ("task", "method", "metric", "student", "teacher", "student_eval", "teacher_eval",
                                          "data", "stages", "stage_steps", "steps", "attention", "wall_time", "run_time",
                                          "device", "backend_report")}
            rec = dict(part=part, label=c["label"], config=cfg, metrics=keep, commit=commit, machine=gpu,
                       host=socket.gethostname(), python=platform.python_version())
            (records / f"{c['config']['run_name']}.json").write_text(json.dumps(portable(rec), indent=1, default=str))
            n += 1
    sessions = records / SESSIONS                   # the runner's own time records, kept beside the runs' records
    for f in sorted((out / "_logs" / "sessions").glob("*.json")):
        sessions.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, sessions / f.name)       # a call's file only grows while it runs: the newest copy wins
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("plan", help="list every part and its cells")
    r = sub.add_parser("run", help="run a part's missing cells")
    r.add_argument("--part", required=True, help=f"a part, or several comma-separated (one pool runs them): {', '.join(sorted(parts()))}")
    r.add_argument("--out", type=Path, default=ROOT / "runs" / "replication")
    r.add_argument("--workers", type=int, default=8)
    r.add_argument("--fashion", default=None, help="folder with Fashion-MNIST's four idx files (default: the installed package's)")
    r.add_argument("--doc_root", default=None, help="folder holding the Debian doc sources of the language cells (default: $CAB_BENCH_DOC_ROOT, else /usr/share/doc)")
    r.add_argument("--limit", type=int, default=None, help="run at most this many cells")
    r.add_argument("--labels", default=None, help="comma-separated labels: only these methods of the part")
    r.add_argument("--max_steps", type=int, default=None, help="a throughput probe: shorten every cell to this many steps")
    r.add_argument("--gpus", type=int, default=None, help="GPUs to spread the workers over (default: all nvidia-smi lists)")
    r.add_argument("--deadline", type=float, default=None, help="seconds from now after which no cell should still run")
    r.add_argument("--est", type=float, default=None, help="seconds one cell takes at this concurrency (with --deadline; default: from the task's records)")
    r.add_argument("--keep_ckpts", action="store_true", help="keep finished runs' checkpoints (default: drop them)")
    r.add_argument("--rerun_recorded", action="store_true", help="also run cells that have a committed record")
    r.add_argument("--budget", type=float, default=None, help="seconds after which running cells checkpoint and stop (as on SIGTERM)")
    r.add_argument("--records", type=Path, default=None, help="afterwards, collect the finished cells into this folder")
    r.add_argument("--commit", default=None, help="the commit to record (default: git's HEAD, else $CAB_BENCH_COMMIT)")
    r.add_argument("--no_pin", action="store_true", help="run with the current kernel defaults even where a part's records name others")
    c = sub.add_parser("collect", help="compact finished runs into results/replication/records/")
    c.add_argument("--out", type=Path, default=ROOT / "runs" / "replication")
    c.add_argument("--records", type=Path, default=RECORDS)
    c.add_argument("--commit", default=None, help="the commit to record (default: git's HEAD, else $CAB_BENCH_COMMIT)")
    a = ap.parse_args(argv)
    if a.cmd == "plan":
        for name, cells in parts().items():
            print(f"{name}: {len(cells)} cells")
            for cl in cells: print(f"  {cl['config']['run_name']}  method={cl['config']['method']} opts={cl['config']['method_opts']}")
    elif a.cmd == "run":
        res = run_part(a.part, a.out, a.workers, a.fashion, a.limit, a.max_steps, a.gpus, a.deadline, a.est,
                       not a.keep_ckpts, a.labels.split(',') if a.labels else None, a.budget,
                       None if a.rerun_recorded else RECORDS, pin=not a.no_pin, doc_root=a.doc_root)
        bad, skipped = [x for x in res if x["ok"] is False], [x for x in res if x["ok"] is None]
        print(f"{len(res) - len(bad) - len(skipped)} finished, {len(bad)} failed, {len(skipped)} left for later"
              f" ({sum(x['why'].startswith('stopped at') for x in skipped)} of them stopped with a checkpoint)")
        if a.records is not None: print(f"{collect(a.out, a.records, a.commit)} records written to {a.records}")
    else:
        print(f"{collect(a.out, a.records, a.commit)} records written to {a.records}")


if __name__ == "__main__":
    main()
