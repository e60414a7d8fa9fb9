"""A whole distillation step without mamba-ssm against the same step with it (issue 15's step target: <= 1.1x).

The same optimizer step (the trainer's own `train_step`, through `bench.bench_step.StageStep`, bf16 autocast) is
timed in two child processes of one machine, then profiled (`benchlib.profile_top`: where each side's kernel time goes):
- `with`: mamba-ssm importable, `auto` backend: its CUDA selective scan and its Triton SSD;
- `without`: the same Python with `mamba_ssm`, `selective_scan_cuda` and `causal_conv1d` made unimportable before
  cab_bench loads (an entry of None in `sys.modules`), so `auto` picks what a user without a build gets: our Triton
  selective scan, fla-core's SSD where it imports, else the chunked paths.
causal-conv1d is not needed for the comparison: when it is absent both sides run the same chunked causal conv; when it
is built, `with` uses it and the ratio then includes the conv kernel too (each child's backend report says which).

Cases (the issue's two, plus the replication grid's own step):
- `vim_tiny_cab`: DeiT-Tiny-size teacher (random init, 224 px) -> Vim-Tiny, CAB's one-stage distill step, batch 128;
- `mamba2_lm_cab`: GPT-2-small-size teacher -> 12-layer Mamba-2 (d 768, 12 heads x 128), CAB's one-stage step,
  8 x 2048 tokens (bench_step's reference length);
- `vim_fashion_cab`: `default:fashion` -> `vim_fashion`, the grid's CAB step, batch 128.

    python -m bench.studies.step_vs_mamba --out bench/results/step_vs_mamba_h200.json     # on a GPU with mamba-ssm
    python -m bench.studies.step_vs_mamba --smoke --out step_vs_mamba_cpu.json             # the code path, anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HIDDEN = ("mamba_ssm", "selective_scan_cuda", "causal_conv1d", "causal_conv1d_cuda")
CASES = ("vim_tiny_cab", "mamba2_lm_cab", "vim_fashion_cab")
TARGET = 1.1


def _case(name:str, dev, smoke:bool=False):
    "(StageStep, batch, description) of one case."
    import torch
    from bench import cases
    from bench.bench_step import StageStep
    from cab_bench.distill import build_method
    from cab_bench.models import load_teacher, create_student
    if name == "vim_tiny_cab":
        pair, b = cases.vision_pair(smoke), 8 if smoke else 128
        teacher, student = cases.vision_teacher(pair, dev), cases.vision_student(pair, dev)
        batch = cases.vision_batch(teacher.num_classes, b, pair.img_size, dev)
        meth, what = build_method("cab", teacher, student), f"{pair.label}, CAB one stage, batch {b}"
    elif name == "mamba2_lm_cab":
        pair, (b, L) = cases.lm_pair(smoke, max_len=4096), ((2, 64) if smoke else (8, 2048))
        teacher, student = cases.lm_teacher(pair, dev), cases.lm_student(pair, dev)
        batch = cases.lm_batch(teacher.vocab_size, b, L, dev)
        meth, what = build_method("cab", teacher, student, two_stage=False), f"{pair.label}, CAB one stage, {b} x {L}"
    elif name == "vim_fashion_cab":
        teacher = load_teacher("default:fashion", device=dev)
        torch.manual_seed(1)
        meth = build_method("cab", teacher, create_student("vim_fashion"), kl=1.0, ce=0.0, lambda_align=3.0, tau=1.0)
        g, b = torch.Generator().manual_seed(0), 8 if smoke else 128
        batch = (torch.randn(b, 1, 28, 28, generator=g).to(dev), torch.randint(0, 10, (b,), generator=g).to(dev))
        what = f"default:fashion -> vim_fashion, CAB (the replication grid's step), batch {b}"
    else:
        raise SystemExit(f"step_vs_mamba: case {name!r} not allowed; expected one of {CASES}")
    return StageStep(meth, meth.stages[0].name, dev), batch, what


def child(mode:str, names:list, out:Path, smoke:bool=False):
    "Time each case in this process; `mode` 'without' hides the kernels first."
    if mode == "without":
        for m in HIDDEN: sys.modules[m] = None          # `import mamba_ssm` now raises ImportError
    import torch
    from cab_bench.ops import backend_report
    from bench.benchlib import environment, measure, free_memory, profile_top
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = dict(mode=mode, environment=environment(), report=backend_report(dev), cases={})
    for name in names:
        step, batch, what = _case(name, dev, smoke)
        r = measure(lambda: step(batch), dev, warmup=1 if smoke else 3, min_reps=1 if smoke else 5, max_reps=30,
                    budget_s=0.1 if smoke else 3.0)
        res["cases"][name] = dict(what=what, ms=r["ms"], ms_min=r["ms_min"], ms_max=r["ms_max"], reps=r["reps"],
                                  peak_gb=None if r["peak_bytes"] is None else r["peak_bytes"] / 2**30,
                                  profile=profile_top(lambda: step(batch), dev, steps=1 if smoke else 3))
        print(f"[{mode}] {name}: {r['ms']:.1f} ms (min {r['ms_min']:.1f}, max {r['ms_max']:.1f}, {r['reps']} reps)", flush=True)
        step.release(); del step, batch; free_memory()
        out.write_text(json.dumps(res, indent=1))                    # after each case: a cut-off run keeps it


LINE = re.compile(r"^\[(with|without)\] (\w+): ([\d.]+) ms \(min ([\d.]+), max ([\d.]+), (\d+) reps\)$")


def read_part(path:Path)->list:
    """[(mode, side dict)] from a child's JSON, or from a log of the children's lines (`[mode] case: ms (min, max,
    reps)`: times only, no profile or backend report), for a run cut off before it wrote its study JSON."""
    text = path.read_text()
    if path.suffix == ".json":
        d = json.loads(text)
        return [(d["mode"], d)]
    sides = {}
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            mode, name, ms, lo, hi, reps = m.groups()
            sides.setdefault(mode, dict(mode=mode, cases={}, source=f"log {path.name} (times only)"))["cases"][name] = dict(
                ms=float(ms), ms_min=float(lo), ms_max=float(hi), reps=int(reps), profile=None)
    return list(sides.items())


def study(sides:dict, names:list, machine:str|None=None, commit:str|None=None)->dict:
    """The study's JSON from the two sides' results: each case's ratio, target and verdict. The environment is the
    children's (a combined run's parts from before children recorded it: `machine` and `commit` as given)."""
    report = sides.get("with", {}).get("report")
    kernels_present = None if report is None else report.get("selective_scan", {}).get("path") == "cuda"
    ratios = {}
    for n in names:
        w, wo = sides.get("with", {}).get("cases", {}).get(n), sides.get("without", {}).get("cases", {}).get(n)
        if not (w and wo): ratios[n] = dict(verdict="not measured (a side is missing)"); continue
        r = wo["ms"] / w["ms"]
        ratios[n] = dict(without_ms=wo["ms"], with_ms=w["ms"], ratio=r, target=TARGET,
                         verdict="no comparison: mamba-ssm was not importable" if kernels_present is False else
                         "met" if r <= TARGET else f"missed by {(r / TARGET - 1) * 100:.0f}%")
    env = next((sd["environment"] for sd in sides.values() if sd.get("environment")), None)
    return dict(study="step_vs_mamba", environment=env, machine=machine or (env or {}).get("device"),
                commit=commit or (env or {}).get("commit"), target=TARGET,
                sides=sides, ratios=ratios,
                note=None if kernels_present is not False else "mamba-ssm was not importable: both sides ran without it")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--smoke", action="store_true", help="tiny pairs, CPU allowed: checks the script, times nothing real")
    ap.add_argument("--child", choices=("with", "without"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parts", default=None, help="comma-separated children's JSON files or logs: combine them into --out "
                                                  "instead of running (a run cut off before its study JSON)")
    ap.add_argument("--machine", default=None, help="with --parts whose children did not record their environment: the machine they ran on")
    ap.add_argument("--commit", default=None, help="with such --parts: the commit they ran")
    a = ap.parse_args(argv)
    names = a.cases.split(",")
    bad = [n for n in names if n not in CASES]
    if bad: raise SystemExit(f"step_vs_mamba: --cases {bad} not allowed; expected some of {', '.join(CASES)}")
    if a.child: return child(a.child, names, a.out, a.smoke)
    from bench.benchlib import write_json
    sides = {}
    if a.parts:
        files = sorted(map(Path, a.parts.split(",")), key=lambda f: f.suffix != ".json")   # the JSON parts first:
        for f in files:                                                                   # a log fills only what they lack
            for mode, part in read_part(f):
                side = sides.setdefault(mode, dict(part, cases={}))
                for n, c in part["cases"].items(): side["cases"].setdefault(n, c)
                side.setdefault("sources", []).append(f.name)
        res = study(sides, names, a.machine, a.commit)
        write_json(a.out, res)
    else:
        parts = []
        for mode in ("without", "with"):
            part = a.out.with_suffix(f".{mode}.json"); parts.append(part)
            subprocess.run([sys.executable, "-m", "bench.studies.step_vs_mamba", "--child", mode, "--out", str(part),
                            "--cases", a.cases] + (["--smoke"] if a.smoke else []), check=False, env=dict(os.environ))
            sides[mode] = json.loads(part.read_text()) if part.exists() else dict(cases={}, error="the child wrote nothing")
            res = study(sides, names)
            write_json(a.out, res)                      # after each side: a cut-off run keeps the first
        for part in parts: part.unlink(missing_ok=True)     # folded into --out, which now holds both sides
    for n, r in res["ratios"].items(): print(n, r)


if __name__ == "__main__":
    main()
