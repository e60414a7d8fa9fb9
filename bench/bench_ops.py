"""Benchmark the sequence-mixing ops, every available path, forward and forward+backward.

    python bench/bench_ops.py --out bench/results/ops.json            # GPU: ENV shapes (Vim-Tiny scan, Mamba-2 SSD)
    python bench/bench_ops.py --smoke --out /tmp/ops_smoke.json        # CPU: tiny shapes, a few repeats

Times are medians over repeats after warm-up (CUDA events on GPU, perf_counter on CPU), inputs random (not zero),
peak memory from the allocator's statistics. Writes JSON with the machine, library versions and git commit, and
prints a markdown table.
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cab_bench.ops import backend_report, kernel, random_scan_inputs, random_ssd_inputs, selective_scan, ssd_scan  # noqa: E402


def environment():
    "Machine, versions and commit, recorded with every result."
    try: commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError: commit = None
    rep = backend_report()
    return dict(device=torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
                python=platform.python_version(), torch=torch.__version__, versions=rep["versions"], commit=commit or None,
                backend_report={k: v for k, v in rep.items() if k not in ("versions", "device")})


def timeit(fn, reps, warmup=2):
    "Median seconds of `fn()` and the peak memory (bytes, CUDA only) of one call."
    cuda = torch.cuda.is_available()
    for _ in range(warmup): fn()
    if cuda:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); fn(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e) / 1e3)
        else:
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return statistics.median(times), peak


def case_selective(shape, dtype, device):
    x = random_scan_inputs(**shape, bc="shared", dtype=torch.float32, device=device, seed=0)
    x = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    leaves = {k: v.requires_grad_() for k, v in x.items() if k != "initial_state"}
    def run(path, backward):
        def f():
            y = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"],
                               leaves["delta_bias"], True, backend=path)
            if backward: y.backward(torch.ones_like(y))
        return f
    return run


def case_ssd(shape, dtype, device):
    x = random_ssd_inputs(**shape, dtype=torch.float32, device=device, seed=0)
    x = {k: (v.to(dtype) if k in ("x", "B", "C") else v) for k, v in x.items()}
    leaves = {k: v.requires_grad_() for k, v in x.items() if k not in ("initial_states", "z")}
    def run(path, backward):
        def f():
            y = ssd_scan(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], 256, D=leaves["D"],
                         dt_bias=leaves["dt_bias"], dt_softplus=True, backend=path)
            if backward: y.backward(torch.ones_like(y))
        return f
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and few repeats (CPU check of the script)")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        cases = [("selective_scan", dict(b=2, d=32, l=64, N=8), case_selective, torch.float32),
                 ("ssd_scan", dict(b=2, l=128, h=4, p=16, g=1, n=16), case_ssd, torch.float32)]
    else:
        cases = [("selective_scan", dict(b=128, d=384, l=197, N=16), case_selective, torch.float32),
                 ("selective_scan", dict(b=128, d=384, l=197, N=16), case_selective, torch.bfloat16),
                 ("ssd_scan", dict(b=8, l=2048, h=24, p=64, g=1, n=128), case_ssd, torch.float32),
                 ("ssd_scan", dict(b=8, l=2048, h=24, p=64, g=1, n=128), case_ssd, torch.bfloat16)]
    rows = []
    for op, shape, case, dtype in cases:
        run = case(shape, dtype, device)
        paths = ["ref", "chunked"] + (["cuda"] if device == "cuda" and kernel(op)[0] is not None else [])
        for path in paths:
            reps = 3 if path == "ref" else (3 if args.smoke else args.reps)
            for backward in (False, True):
                sec, peak = timeit(run(path, backward), reps, warmup=1 if path == "ref" else 3)
                rows.append(dict(op=op, shape=shape, dtype=str(dtype).split(".")[-1], path=path,
                                 pass_="fwd+bwd" if backward else "fwd", ms=sec * 1e3, peak_mb=None if peak is None else peak / 2**20))
                print(f"{op:15s} {rows[-1]['dtype']:9s} {path:8s} {rows[-1]['pass_']:8s} {sec*1e3:10.3f} ms", flush=True)
    # speed-ups of the chunked path over the sequential reference, and the kernels over the chunked path
    summary = {}
    for r in rows:
        if r["path"] != "chunked": continue
        key = f"{r['op']}/{r['dtype']}/{r['pass_']}"
        same = lambda p: next((q["ms"] for q in rows if q["path"] == p and q["op"] == r["op"] and q["dtype"] == r["dtype"] and q["pass_"] == r["pass_"]), None)
        summary[key] = dict(ref_over_chunked=same("ref") / r["ms"], chunked_over_cuda=(r["ms"] / same("cuda")) if same("cuda") else None)
    result = dict(env=environment(), smoke=args.smoke, rows=rows, summary=summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\n| op | dtype | pass | ref ms | chunked ms | cuda ms | ref/chunked | chunked/cuda |")
    print("|---|---|---|---|---|---|---|---|")
    for key, s in summary.items():
        op, dt, ps = key.split("/")
        ms = {p: next((q["ms"] for q in rows if q["path"] == p and q["op"] == op and q["dtype"] == dt and q["pass_"] == ps), None) for p in ("ref", "chunked", "cuda")}
        f = lambda v: "-" if v is None else f"{v:.3f}"
        print(f"| {op} | {dt} | {ps} | {f(ms['ref'])} | {f(ms['chunked'])} | {f(ms['cuda'])} | {s['ref_over_chunked']:.1f}x | "
              f"{'-' if s['chunked_over_cuda'] is None else f(s['chunked_over_cuda']) + 'x'} |")
    return result


if __name__ == "__main__":
    main()
