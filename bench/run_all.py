"""The benchmark suite in one command: ops, distillation steps (language, vision), generation, then SUMMARY.md.

    python -m bench.run_all                          # GPU: full configuration, results in bench/results/
    python -m bench.run_all --smoke                  # tiny CPU configuration (also chosen when torch sees no CUDA device)
    python -m bench.run_all --only ops,gen --out /tmp/b

Each section has a wall-clock cap (its share of `--budget`) and writes `<out>/<section>.json` after every point, so a
killed run keeps what it measured; `<out>/run.json` records the command, the pre-warm and each section's status, and
`<out>/SUMMARY.md` is regenerated from the JSON files at the end (`python -m bench.report summary <out>` does it alone).
Run it from the repository root (or with cab_bench installed): `bench` is a package, nothing edits `sys.path`.
"""
from __future__ import annotations

import os

# Autotuning results go to Triton's on-disk cache, so what the pre-warm processes tuned is reused by the sections
# (and by the sections' own warm-up calls) instead of being tuned again. Set before torch or triton is imported.
os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
# One Triton cache directory for every process. Left unset, inductor points TRITON_CACHE_DIR at its own directory
# the first time it runs a compiled kernel (the ops section's chunked scan), and from then on this process no longer
# finds the kernels the pre-warm processes compiled into Triton's default directory. A fresh H200 then spent 229 s
# recompiling them in the step section's warm-up.
os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".triton", "cache"))

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from . import benchlib
from .benchlib import ROOT, environment, log, write_json

SECTIONS = ("ops", "step", "vision", "gen")
# seconds per section on the GPU (sum 6.3 min; each includes the autotuning benchmarks of its first kernel calls)
# and in the CPU smoke configuration
CAPS = dict(full=dict(ops=90, step=150, vision=40, gen=100), smoke=dict(ops=20, step=30, vision=20, gen=20))
PREWARM_CAP = dict(full=200, smoke=90)   # a cold H200 compiles the four families in ~2 min
WARM_FAMILIES = dict(ops=("ops", "scan"), step=("lm", "hedgehog"), vision=(), gen=("lm",))
# the whole run's wall-clock limit (full configuration): a section whose warm-up overruns shortens the later sections'
# caps instead of pushing the run past it; each later section keeps at least RESERVE of its cap
DEADLINE_S, RESERVE = 540, 0.5


def cache_files()->dict:
    "Files in Triton's and inductor's on-disk caches: how much a phase compiled (a warm cache barely grows)."
    def count(d):
        try: return sum(len(f) for _, _, f in os.walk(d)) if d and os.path.isdir(d) else 0
        except OSError: return None
    triton_dir = os.environ.get("TRITON_CACHE_DIR")
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        inductor_dir = cache_dir()
    except Exception: inductor_dir = None
    return dict(triton=count(triton_dir), inductor=count(inductor_dir))


def prewarm(sections, smoke:bool, cap_s:float)->dict:
    "Compile the Triton kernels the sections will call, one process per family at once (the smoke run: one process)."
    fams = sorted({f for s in sections for f in WARM_FAMILIES[s]})
    if not fams: return dict(status="nothing to warm")
    if not smoke:
        from cab_bench.ops import kernel
        fn, why = kernel("ssd_scan")
        if fn is None: return dict(status=f"skipped: no Triton kernels to compile ({why})")
    groups = [fams] if smoke else [[f] for f in fams]
    t0, procs = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="cab_bench_warm_") as tmp:   # the processes' logs: their tails go into run.json
        logs = Path(tmp)
        for g in groups:
            name = "+".join(g)
            out = open(logs / f"{name}.log", "w")
            cmd = [sys.executable, "-m", "bench.warm", ",".join(g)] + (["--smoke"] if smoke else [])
            procs.append((name, subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT), out))
        res = dict(families={})
        for name, p, out in procs:
            try: rc = p.wait(timeout=max(1.0, cap_s - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                p.kill(); p.wait(); rc = "killed at the pre-warm cap"
            out.close()
            text = (logs / f"{name}.log").read_text()
            last = text.strip().splitlines()[-1] if text.strip() else ""
            ok = rc == 0 and last.startswith("{")
            res["families"][name] = json.loads(last) if ok else dict(rc=rc, tail=text[-1500:])
    res["wall_s"] = round(time.monotonic() - t0, 1)
    res["status"] = "ok" if all(isinstance(v, dict) and "rc" not in v for v in res["families"].values()) else "failed (sections autotune themselves)"
    return res


def main(argv=None)->int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (automatic without a CUDA device)")
    ap.add_argument("--out", default=None, help="result folder (default bench/results, smoke: bench/results/smoke)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--profile", dest="profile", action="store_true", default=True,
                    help="torch.profiler of one soft_kd, CAB and MOHAWK stage-1 step at the reference length (default on)")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--no-prewarm", action="store_true", help="let each section autotune the Triton kernels itself")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections together (split in the default proportions)")
    ap.add_argument("--strict", action="store_true", help="an error at any point stops the run (default in the smoke run)")
    ap.add_argument("--deadline", type=float, default=None,
                    help=f"seconds for the whole run, pre-warm included (default {DEADLINE_S} for the full configuration, none in the smoke run)")
    a = ap.parse_args(argv)
    smoke = a.smoke or not torch.cuda.is_available()
    if smoke and not a.smoke: log("no CUDA device: running the smoke configuration")
    strict = a.strict or smoke
    benchlib.configure(smoke)
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / ("smoke" if smoke else "")
    out.mkdir(parents=True, exist_ok=True)
    sections = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad: ap.error(f"--only: unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    caps = dict(CAPS["smoke" if smoke else "full"])
    if a.budget:
        scale = a.budget / sum(caps[s] for s in sections)
        caps = {k: v * scale for k, v in caps.items()}
    t0 = time.monotonic()
    env = environment()
    deadline = a.deadline if a.deadline else (None if smoke else DEADLINE_S)
    run = dict(command=" ".join(["python", "-m", "bench.run_all", *(argv if argv is not None else sys.argv[1:])]), smoke=smoke,
               out=str(out), started=env["timestamp"], status="running", caps_s=caps, deadline_s=deadline, sections={},
               prewarm=None, wall_s=None, autotune_cache=os.environ.get("TRITON_CACHE_AUTOTUNING"),
               cache_files=dict(start=cache_files()))
    run_path = out / "run.json"
    write_json(run_path, dict(run, env=env))
    log(f"cab_bench suite: {'SMOKE' if smoke else 'full'} on {env['device']}, commit {env['commit']}, out {out}")
    if not a.no_prewarm:
        log("pre-warming Triton kernels ...")
        run["prewarm"] = prewarm(sections, smoke, PREWARM_CAP["smoke" if smoke else "full"])
        run["cache_files"]["prewarm"] = cache_files()
        log(f"pre-warm: {json.dumps(run['prewarm'])[:400]}")
        write_json(run_path, dict(run, env=env))
    failed = False
    for i, s in enumerate(sections):
        ts = time.monotonic()
        if deadline:                                   # what the run has left, less a reserve for the later sections
            left = deadline - (ts - t0) - RESERVE * sum(caps[x] for x in sections[i + 1:])
            if left < caps[s]: caps[s] = max(left, 5.0); run["caps_s"] = caps
        log(f"--- {s} (cap {caps[s]:.0f} s)")
        try:
            if s == "ops":
                from . import bench_ops
                r = bench_ops.run(out / "ops.json", env, smoke, caps[s], strict)
            elif s == "step":
                from . import bench_step
                r = bench_step.run_lm(out / "step.json", env, smoke, caps[s], strict, do_profile=a.profile)
            elif s == "vision":
                from . import bench_step
                r = bench_step.run_vision(out / "vision.json", env, smoke, caps[s], strict)
            else:
                from . import bench_gen
                r = bench_gen.run(out / "gen.json", env, smoke, caps[s], strict)
            errors = [x for x in r["skipped"] if x["why"].startswith("error")]
            failed |= bool(errors)
            run["sections"][s] = dict(status=r["status"] + (f", {len(errors)} point(s) failed" if errors else ""),
                                      wall_s=round(time.monotonic() - ts, 1), warmup_s=r.get("warmup_s"), points=len(r["results"]),
                                      not_measured=len(r["skipped"]))
        except Exception as e:
            failed = True
            run["sections"][s] = dict(status=f"error: {type(e).__name__}: {e}", wall_s=round(time.monotonic() - ts, 1),
                                      traceback=traceback.format_exc()[-3000:])
            log(run["sections"][s]["traceback"])
            if strict: break
        finally:
            benchlib.free_memory()
        run["cache_files"][s] = cache_files()
        write_json(run_path, dict(run, env=env))
    from . import report
    run.update(status="failed" if failed else "complete", wall_s=round(time.monotonic() - t0, 1))
    write_json(run_path, dict(run, env=env))
    p = report.write(out)
    log(f"done in {run['wall_s']:.0f} s: {p}")
    md = p.read_text()
    i = md.find("## Targets")
    if i >= 0: print(md[i:md.find("\n## ", i + 5)], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
