"""Benchmark the sequence-mixing ops, every available path, forward and forward+backward.

    python -m bench.bench_ops --out bench/results/ops.json        # GPU: ENV.md's shapes, then sequence lengths 1K-16K
    python -m bench.bench_ops --smoke --out /tmp/ops_smoke.json    # CPU: tiny shapes, a few repeats

Paths: 'ref' (sequential reference; only at ENV.md's shapes, it is far too slow at long sequences), 'chunked'
(PyTorch), 'cuda' (mamba-ssm kernels, when importable on a CUDA device; otherwise recorded as unavailable with the
reason). fp32 unless `--dtypes` says otherwise. Forward passes run under `torch.no_grad()`; forward+backward
back-propagates a random output gradient. Achieved bandwidth = the op's memory floor (every input read once, every
output written once; for fwd+bwd also the backward's inputs and gradients) / time, next to a measured device-to-device
copy. Part of `bench.run_all`; also runs on its own.
"""
from __future__ import annotations

import argparse
import time

import torch

from .benchlib import (Deadline, Guard, SectionLog, configure, copy_bandwidth, device, environment, free_memory, log, measure,  # noqa: F401
                      write_json, MB)
from cab_bench.ops import backend_report, kernel, random_scan_inputs, random_ssd_inputs, selective_scan, ssd_scan


# ENV.md's table: Vim-Tiny's selective scan and Mamba-2 SSD at 2K context
ENV_SHAPES = dict(selective_scan=dict(b=128, d=384, l=197, N=16), ssd_scan=dict(b=8, l=2048, h=24, p=64, g=1, n=128))
# the sequence-length sweep: one sequence pair of the 130M layouts (Mamba-1: d_inner 1536, N 16; Mamba-2: 24 x 64, N 128)
SWEEP_SHAPES = dict(selective_scan=dict(b=2, d=1536, N=16), ssd_scan=dict(b=2, h=24, p=64, g=1, n=128))


def settings(smoke:bool, dtypes=("float32",))->dict:
    if smoke:
        return dict(env_shapes=dict(selective_scan=dict(b=2, d=32, l=64, N=8), ssd_scan=dict(b=2, l=128, h=4, p=16, g=1, n=16)),
                    sweep_shapes=dict(selective_scan=dict(b=1, d=32, N=8), ssd_scan=dict(b=1, h=4, p=16, g=1, n=16)),
                    lengths=[64, 128], chunk_size=32, dtypes=list(dtypes), point_budget_s=0.05, max_reps=5, copy_mb=8)
    return dict(env_shapes=ENV_SHAPES, sweep_shapes=SWEEP_SHAPES, lengths=[1024, 2048, 4096, 8192, 16384], chunk_size=256,
                dtypes=list(dtypes), point_budget_s=0.6, max_reps=50, copy_mb=1024)


# ------------------------------------------------------------------------------------------------------------ the cases
def _dt(name): return getattr(torch, name)


class SelectiveCase:
    "Mamba-1's scan as the mixer calls it: D, z, delta_bias, softplus; (batch, channels, length) layout."
    op = "selective_scan"
    def __init__(self, shape:dict, dtype:str, dev):
        x = random_scan_inputs(**shape, bc="shared", dtype=torch.float32, device=dev, seed=0)
        low = ("u", "delta", "B", "C", "z")                              # activations in `dtype`, parameters fp32
        self.x = {k: (v.to(_dt(dtype)) if k in low else v).requires_grad_() for k, v in x.items() if k != "initial_state"}
        b, d, l = shape["b"], shape["d"], shape["l"]
        self.dy = torch.randn(b, d, l, device=dev, dtype=_dt(dtype))
        s, n = torch.finfo(_dt(dtype)).bits // 8, shape["N"]
        act, bc = b * d * l * s, b * n * l * s
        self.floor = {"fwd": 3 * act + 2 * bc + act,                       # read u, delta, z, B, C; write y
                      "fwd+bwd": (4 * act + 2 * bc) + (7 * act + 4 * bc)}  # + read u, delta, z, B, C, dy; write du, ddelta, dz, dB, dC
    def call(self, path):
        x = self.x
        return selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, backend=path)


class SSDCase:
    "Mamba-2's SSD scan as the mixer calls it: D, dt_bias, softplus, no z; (batch, length, heads, headdim) layout."
    op = "ssd_scan"
    def __init__(self, shape:dict, dtype:str, dev, chunk_size:int):
        x = random_ssd_inputs(**shape, dtype=torch.float32, device=dev, seed=0)
        low = ("x", "B", "C", "dt")
        self.x = {k: (v.to(_dt(dtype)) if k in low else v).requires_grad_() for k, v in x.items() if k not in ("initial_states", "z")}
        b, l, h, p, g, n = (shape[k] for k in "blhpgn")
        self.chunk = chunk_size
        self.dy = torch.randn(b, l, h, p, device=dev, dtype=_dt(dtype))
        s = torch.finfo(_dt(dtype)).bits // 8
        act, bc, dt = b * l * h * p * s, b * l * g * n * s, b * l * h * s
        self.floor = {"fwd": act + 2 * bc + dt + act,                      # read x, B, C, dt; write y
                      "fwd+bwd": (2 * act + 2 * bc + dt) + (2 * act + 2 * bc + dt) + (act + 2 * bc + dt)}
    def call(self, path):
        x = self.x
        return ssd_scan(x["x"], x["dt"], x["A"], x["B"], x["C"], self.chunk, D=x["D"], dt_bias=x["dt_bias"], dt_softplus=True,
                        backend=path)


def make_case(op, shape, dtype, dev, chunk_size):
    return SelectiveCase(shape, dtype, dev) if op == "selective_scan" else SSDCase(shape, dtype, dev, chunk_size)


def runner(case, path:str, pass_:str):
    "The timed call: forward without autograd, or forward + backward of a random output gradient."
    if pass_ == "fwd":
        def f():
            with torch.no_grad(): case.call(path)
    else:
        def f():
            for v in case.x.values(): v.grad = None
            case.call(path).backward(case.dy)
    return f


def cuda_unavailable(op:str, dev)->str:
    "Why the mamba-ssm path cannot run `op` here ('' when it can)."
    if dev.type != "cuda":
        return ("smoke configuration on the CPU" if torch.cuda.is_available() else "no CUDA device") + ": " + backend_report("cpu")[op]["reason"]
    fn, why = kernel(op)
    return "" if fn is not None else why


# ------------------------------------------------------------------------------------------------------------ the section
def warm_ops(smoke:bool):
    "The SSD kernels at ENV.md's head dim / state size / chunk, fp32, forward and forward+backward (the ops section)."
    dev, st = device(), settings(smoke)
    for dtype in st["dtypes"]:
        cases = [SSDCase(dict(st["env_shapes"]["ssd_scan"], b=2, l=min(512, st["env_shapes"]["ssd_scan"]["l"])), dtype, dev, st["chunk_size"]),
                 SelectiveCase(dict(st["env_shapes"]["selective_scan"], b=2), dtype, dev)]
        for case in cases:
            path = "chunked" if cuda_unavailable(case.op, dev) else "cuda"
            for pass_ in ("fwd", "fwd+bwd"): runner(case, path, pass_)()


def warm_scan(smoke:bool):
    "cab_bench's chunked selective scan at the ops section's shapes (ENV.md's and the length sweep's), fwd and fwd+bwd."
    dev, st = device(), settings(smoke)
    shapes = [st["env_shapes"]["selective_scan"]] + [dict(st["sweep_shapes"]["selective_scan"], l=l) for l in st["lengths"]]
    for dtype in st["dtypes"]:
        for shape in shapes:
            case = SelectiveCase(shape, dtype, dev)
            for pass_ in ("fwd", "fwd+bwd"): runner(case, "chunked", pass_)()
            del case


def run(out_path, env:dict, smoke:bool, cap_s:float, strict:bool=False, dtypes=("float32",))->dict:
    "Time every op x path x pass at ENV.md's shapes, then the chunked and kernel paths over sequence lengths."
    dev = device()
    st = settings(smoke, dtypes)
    sec = SectionLog(out_path, "ops", env, st, smoke, cap_s)
    deadline, guard = Deadline(cap_s), Guard(strict)
    t0 = time.monotonic()
    warm_ops(smoke)                      # this process's autotuning of the kernels, before any point is timed
    warm_scan(smoke)                     # and the chunked scan's compiled shapes (cache hits after the pre-warm)
    sec.set(warmup_s=round(time.monotonic() - t0, 2))
    bw = copy_bandwidth(dev, st["copy_mb"] * MB)
    sec.set(copy_bandwidth=bw)
    log(f"[ops] device-to-device copy: {bw['gb_per_s']:.0f} GB/s")
    unavailable = {op: cuda_unavailable(op, dev) for op in ENV_SHAPES}
    sec.set(unavailable={op: {"cuda": why} for op, why in unavailable.items() if why})
    # (kind, op, shape, dtype, paths): ENV.md's shapes with every path first, then the sweep without the reference
    plan = []
    for dtype in st["dtypes"]:
        for op, shape in st["env_shapes"].items():
            plan.append(("env", op, shape, dtype, ["chunked", "cuda", "ref"]))
    for dtype in st["dtypes"]:
        for op, shape in st["sweep_shapes"].items():
            for l in st["lengths"]:
                plan.append(("sweep", op, dict(shape, l=l), dtype, ["chunked", "cuda"]))
    stopped = set()                          # (op, dtype, path, pass) series that ran out of memory
    last_ms = {}                             # (op, dtype, path, pass) -> last time, to skip points that cannot fit
    capped = False
    for kind, op, shape, dtype, paths in plan:
        paths = [p for p in paths if not (p == "cuda" and unavailable[op])]
        case, why = guard(lambda: make_case(op, shape, dtype, dev, st["chunk_size"]))
        if case is None:
            sec.skip(why, kind=kind, op=op, shape=shape, dtype=dtype); continue
        for path in paths:
            for pass_ in ("fwd", "fwd+bwd"):
                key = (op, dtype, path, pass_)
                where = dict(kind=kind, op=op, shape=shape, dtype=dtype, path=path, pass_=pass_)
                if key in stopped and kind == "sweep":
                    sec.skip("oom at a shorter length", **where); continue
                est = 3 * 2.2 * last_ms.get(key, 0.0) / 1e3
                if not deadline.allows(est + 0.5):
                    capped = True; sec.skip("time cap", **where); continue
                ref = path == "ref"
                r, why = guard(lambda: measure(runner(case, path, pass_), dev, warmup=1 if ref else 3, min_reps=3,
                                               max_reps=3 if ref else st["max_reps"], budget_s=st["point_budget_s"],
                                               cap_s=max(deadline.left() - 1, 0.1)))
                if r is None:
                    stopped.add(key); sec.skip(why, **where); continue
                last_ms[key] = r["ms"]
                floor = case.floor[pass_]
                gbps = floor / (r["ms"] / 1e3) / 1e9
                row = dict(where, l=shape["l"], ms=r["ms"], ms_min=r["ms_min"], ms_max=r["ms_max"], reps=r["reps"],
                           peak_mb=None if r["peak_bytes"] is None else (r["peak_bytes"] - r["base_bytes"]) / MB,
                           inputs_mb=None if r["base_bytes"] is None else r["base_bytes"] / MB,
                           floor_mb=floor / MB, gb_per_s=gbps, pct_of_copy=100 * gbps / bw["gb_per_s"])
                sec.add(row)
                log(f"[ops] {kind:5s} {op:14s} {dtype:8s} L={shape['l']:<6d} {path:7s} {pass_:7s} {r['ms']:10.3f} ms "
                    f"{gbps:8.1f} GB/s ({row['pct_of_copy']:.1f}% of copy)")
        case = None; free_memory()
    sec.set(summary=ratios(sec.data["results"]))
    return sec.finish(capped)


def ratios(rows:list)->dict:
    "At ENV.md's shapes: reference / chunked and chunked / kernel time, per op, dtype and pass."
    out = {}
    ms = {(r["op"], r["dtype"], r["path"], r["pass_"]): r["ms"] for r in rows if r["kind"] == "env"}
    for (op, dt, path, ps), t in ms.items():
        if path != "chunked": continue
        ref, cu = ms.get((op, dt, "ref", ps)), ms.get((op, dt, "cuda", ps))
        out[f"{op}/{dt}/{ps}"] = dict(ref_over_chunked=ref / t if ref else None, chunked_over_cuda=t / cu if cu else None)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and few repeats (CPU check of the script)")
    ap.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16")
    ap.add_argument("--cap", type=float, default=None, help="wall-clock cap in seconds (default 90 GPU, 30 smoke)")
    ap.add_argument("--reps", type=int, default=None, help="(ignored; repeats follow the time budget)")
    a = ap.parse_args(argv)
    smoke = a.smoke or not torch.cuda.is_available()
    configure(smoke)
    r = run(a.out, environment(), smoke, a.cap or (30 if smoke else 90), strict=smoke, dtypes=a.dtypes.split(","))
    print("\n| op | dtype | pass | ref ms | chunked ms | cuda ms | ref/chunked | chunked/cuda |\n|---|---|---|---|---|---|---|---|")
    f = lambda v: "-" if v is None else f"{v:.3f}"
    for key, s in r["summary"].items():
        op, dt, ps = key.split("/")
        ms = {p: next((q["ms"] for q in r["results"] if q["kind"] == "env" and (q["op"], q["dtype"], q["path"], q["pass_"]) == (op, dt, p, ps)), None)
              for p in ("ref", "chunked", "cuda")}
        print(f"| {op} | {dt} | {ps} | {f(ms['ref'])} | {f(ms['chunked'])} | {f(ms['cuda'])} | "
              f"{f(s['ref_over_chunked'])}x | {f(s['chunked_over_cuda'])}x |")
    # the older layout the project test reads: `rows` with op / path / pass_ / ms
    write_json(a.out, dict(r, rows=r["results"]))
    return r


if __name__ == "__main__":
    main()
