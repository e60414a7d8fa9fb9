"""Tuning the Triton selective scan's launch settings on a GPU: chunk length, channels per program, warps.

`cab_bench.ops.triton_scan` reads `SCAN_T` (steps per chunk), `SCAN_BD_MAX` (channels per program), `SCAN_WARPS`
(forward), `SCAN_WARPS_BWD` (backward), `SCAN_FWD` (which forward kernel), `SCAN_BWD` / `SCAN_BWD_BD_MAX` (which
backward kernel, and the 'states' kernel's channels per program) and `SCAN_SEQ_IO` (how the 'seq' kernels get a
step's values) at each call. This times the forward and the
backward separately for every combination of the values below, at the shapes the workbench runs (the replication grid's `vim_fashion` step, bf16
inputs with B and C as strided views of the x_proj output, as the Vim mixer passes them; Vim-Tiny at 197 tokens; one
long sequence), checks each setting's outputs and gradients against the module's defaults, and writes a JSON table
with the fastest setting per shape, twice: by the wall time of a call (CUDA events around it) and by the GPU time of
its kernels alone (torch.profiler; `best_kernel`). At the small shapes a call's wall time can be set by the CPU
launching its kernels (on an H200, vim_fashion's forward + backward with 'step' I/O took 0.72 ms a call, while in
the training step's profile its kernels took 0.45 ms, and 0.30 ms staged), and a training step whose GPU stays busy, or several runs sharing one GPU,
pay only the kernel time. The backward keeps the forward's chunk length (its recomputation starts from the
forward's per-chunk states); the 'tiles' backward also its channel block, while the 'states' backward has its own.

    python -m bench.studies.scan_tune --out bench/results/scan_tune_h200.json            # on a GPU
    TRITON_INTERPRET=1 python -m bench.studies.scan_tune --smoke --out scan_tune_cpu.json    # the code path, on a CPU
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from bench.benchlib import environment, measure, profile_top, write_json

SHAPES = {        # name: (batch, channels, length, d_state, dt_rank)
    "vim_fashion": (128, 384, 50, 16, 12),
    "vim_tiny": (64, 384, 197, 16, 12),
    "long": (2, 1536, 4096, 16, 48),
    "long16k": (2, 1536, 16384, 16, 48),     # not in the default --shapes: the 16K end of the bench's sweep
}
GRID = dict(T=(8, 16, 32), BD_MAX=(2, 4, 8, 16), WARPS=(1, 2, 4, 8), WARPS_BWD=(2, 4, 8), BWD_BD_MAX=(8, 16, 32, 64),
            T_STATES=(64, 256), BD_STATES=(1, 2, 4, 8), WARPS_STATES=(1, 2, 4),
            # the 'seq' kernels (one step at a time, states in registers): T is the longest chunk there (the
            # sequence is cut into equal chunks), each setting with a step's values column by column and staged
            T_SEQ=(16, 32), BD_SEQ=(8, 16, 32), WARPS_SEQ=(1, 2), BWD_BD_SEQ=(8, 16, 32), WARPS_BWD_SEQ=(1, 2),
            SEQ_IO=("step", "staged"))     # 216 settings a shape
# Long sequences: few programs (batch x channels / block) each walk many chunks one after another, so longer chunks
# (fewer sequential steps, more work per step) and fewer channels per program (more programs) are tried there.
LONG_GRID = dict(T=(16, 64), BD_MAX=(1, 2), WARPS=(1, 4), WARPS_BWD=(2, 4), BWD_BD_MAX=(2, 4, 8),
                 # the 'states' forward (one state at a time): chunks of hundreds of steps at few registers
                 T_STATES=(64, 128, 256, 512), BD_STATES=(1, 2), WARPS_STATES=(1, 2, 4, 8))     # 78 settings
SHAPE_GRIDS = {"long": LONG_GRID, "long16k": LONG_GRID}


def inputs(b, d, l, N, R, dev, dtype=torch.bfloat16, seed=0):
    "The Vim mixer's call: u, delta, z (b, d, l); B, C (b, N, l) views of one (b, l, R + 2N) projection; fp32 A, D, bias."
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(dev)
    proj = r(b, l, R + 2 * N).to(dtype)
    _, B, C = proj.split([R, N, N], -1)
    x = dict(u=r(b, d, l).to(dtype), delta=(r(b, d, l) * 0.5 - 1).to(dtype), A=-torch.exp(r(d, N) * 0.5 + 0.5),
             B=B.transpose(1, 2), C=C.transpose(1, 2), D=r(d), z=r(b, d, l).to(dtype), delta_bias=r(d) * 0.1 - 3)
    return {k: (v.requires_grad_() if v.is_leaf else v) for k, v in x.items()}


def run_once(ts, x, gy):
    "Forward, then the backward for cotangent gy: (y, grads)."
    y = ts.selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    leaves = [x[k] for k in ("u", "delta", "A", "D", "z", "delta_bias")]
    return y, torch.autograd.grad(y, leaves, gy)


def rel(a, b)->float: return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def summary(rows:list, grid:dict, saved:dict, shape:tuple)->dict:
    """The table so far: rows, each backward's estimated best step, the best one by wall time and by kernel time,
    the defaults' times. `saved`: the module's settings the rows leave out; `shape`: (batch, d, L, N, dt_rank)."""
    ok = [r for r in rows if "ms" in r and r["err"] < 1e-2]
    io = lambda r: r.get("SCAN_SEQ_IO", saved["SCAN_SEQ_IO"])
    fkey = lambda r: (r["SCAN_FWD"], r["SCAN_T"], r.get("SCAN_BD_MAX", saved["SCAN_BD_MAX"]), r.get("SCAN_WARPS", saved["SCAN_WARPS"]),
                      io(r))
    fwd_at = {fkey(r): r["ms"] for r in ok if r["kind"] == "fwd"}
    kern_at = {fkey(r): r.get("kernel_ms") for r in ok if r["kind"] == "fwd"}
    est = []
    for T in sorted({*grid["T"], *grid.get("T_STATES", ()), *grid.get("T_SEQ", ())}):
        fw = [r for r in ok if r["kind"] == "fwd" and r["SCAN_T"] == T]
        for b in (r for r in ok if r["kind"] == "fwd_bwd" and r["SCAN_T"] == T):
            if fkey(b) not in fwd_at: continue                             # the forward it ran after was not timed
            bwd_ms = b["ms"] - fwd_at[fkey(b)]
            fbd = b.get("SCAN_BD_MAX", saved["SCAN_BD_MAX"])
            cand = [f for f in fw if (b["SCAN_BWD"] != "tiles" or f["SCAN_BD_MAX"] == fbd)    # 'tiles' needs the same block
                    and (f["SCAN_FWD"] != "seq" or b["SCAN_BWD"] != "seq" or io(f) == io(b))]  # one SCAN_SEQ_IO a call
            if not cand: continue
            f = min(cand, key=lambda r: r["ms"])
            e = dict(SCAN_T=T, SCAN_FWD=f["SCAN_FWD"], SCAN_BD_MAX=f["SCAN_BD_MAX"], SCAN_WARPS=f["SCAN_WARPS"],
                     SCAN_BWD=b["SCAN_BWD"], SCAN_BWD_BD_MAX=b.get("SCAN_BWD_BD_MAX"), SCAN_WARPS_BWD=b["SCAN_WARPS_BWD"],
                     SCAN_SEQ_IO=io(b), fwd_ms=f["ms"], bwd_ms=bwd_ms, fwd_bwd_ms=f["ms"] + bwd_ms)
            kf = [r for r in cand if r.get("kernel_ms") is not None]   # the same estimate in kernel time
            if kf and b.get("kernel_ms") is not None and kern_at.get(fkey(b)) is not None:
                fk = min(kf, key=lambda r: r["kernel_ms"])
                e["kernel"] = dict(SCAN_FWD=fk["SCAN_FWD"], SCAN_BD_MAX=fk["SCAN_BD_MAX"], SCAN_WARPS=fk["SCAN_WARPS"],
                                   fwd_ms=fk["kernel_ms"], bwd_ms=b["kernel_ms"] - kern_at[fkey(b)],
                                   fwd_bwd_ms=fk["kernel_ms"] + b["kernel_ms"] - kern_at[fkey(b)])
            est.append(e)
    # a backward whose fwd_bwd time came out below its forward's alone is below the timing noise: listed, not ranked
    for e in est: e["below_noise"] = e["bwd_ms"] <= 0
    ranked = [e for e in est if not e["below_noise"]]
    best = min(ranked, key=lambda r: r["fwd_bwd_ms"]) if ranked else None
    kr = [e for e in est if e.get("kernel") and e["kernel"]["bwd_ms"] > 0]
    best_kernel = min(kr, key=lambda r: r["kernel"]["fwd_bwd_ms"]) if kr else None
    dflt = next((r for r in ok if r["kind"] == "fwd_bwd" and all(r.get(k, saved[k]) == saved[k] for k in saved)), None)
    return dict(shape=dict(zip(("batch", "d", "L", "N", "dt_rank"), shape)), grid=grid, rows=rows, estimates=est, best=best,
                best_kernel=best_kernel, default_fwd_bwd_ms=dflt and dflt["ms"],
                default_fwd_bwd_kernel_ms=dflt and dflt.get("kernel_ms"))


def tune(ts, shape:tuple, dev, grid:dict, smoke:bool, on_rows=None, only:str|None=None)->dict:
    """Forward alone for every (T, BD_MAX, WARPS) of the 'tiles' forward and every (T_STATES, BD_STATES, WARPS_STATES)
    of the 'states' forward (where the grid has them); forward + backward for every backward kernel setting: 'tiles'
    with (T, BD_MAX, WARPS_BWD) (it uses the forward's channel block), 'states' with (T or T_STATES, BWD_BD_MAX,
    WARPS_BWD) at the default forward block, both after the default forward (the 'states' one at chunks longer than
    the 'tiles' forward is tried at) at the default forward warps. A backward's time is fwd_bwd minus the forward it
    ran after; the estimated best step per T is the best forward plus the best backward it allows."""
    x = inputs(*shape, dev)
    gy = torch.randn(shape[0], shape[1], shape[2], device=dev).to(x["u"].dtype)
    saved = {k: getattr(ts, k) for k in ts.LAUNCH_KEYS}
    y0, g0 = run_once(ts, x, gy)                     # the module's defaults: the reference for every setting
    kw = dict(warmup=2, budget_s=0.05 if smoke else 0.3, min_reps=1 if smoke else 5)
    det = {k: v.detach() for k, v in x.items()}
    def fwd(): ts.selective_scan_triton(det["u"], det["delta"], det["A"], det["B"], det["C"], det["D"], det["z"],
                                        det["delta_bias"], True)
    def both(): run_once(ts, x, gy)
    fdef = {k: saved[k] for k in ("SCAN_FWD", "SCAN_BD_MAX", "SCAN_WARPS")}
    Ts = grid.get("T_STATES", ())
    settings = [dict(kind="fwd", SCAN_FWD="tiles", SCAN_T=T, SCAN_BD_MAX=bd, SCAN_WARPS=w)
                for T, bd, w in itertools.product(grid["T"], grid["BD_MAX"], grid["WARPS"])]
    settings += [dict(kind="fwd", SCAN_FWD="states", SCAN_T=T, SCAN_BD_MAX=bd, SCAN_WARPS=w)
                 for T, bd, w in itertools.product(Ts, grid.get("BD_STATES", ()), grid.get("WARPS_STATES", ()))]
    # a backward runs after a forward at its chunk length: the default forward, or the 'states' one at the
    # default block and warps where the chunk is longer than the 'tiles' forward is tried at
    after = lambda T: dict(fdef, SCAN_FWD="states") if T not in grid["T"] else fdef
    settings += [dict(after(T), kind="fwd_bwd", SCAN_BWD="states", SCAN_T=T, SCAN_BWD_BD_MAX=bd, SCAN_WARPS_BWD=w)
                 for T, bd, w in itertools.product(sorted({*grid["T"], *Ts}), grid["BWD_BD_MAX"], grid["WARPS_BWD"])]
    settings += [dict(after(T), kind="fwd_bwd", SCAN_BWD="tiles", SCAN_T=T, SCAN_BD_MAX=bd, SCAN_WARPS_BWD=w)
                 for T, bd, w in itertools.product(grid["T"], grid["BD_MAX"], grid["WARPS_BWD"])]
    Tq = grid.get("T_SEQ", ())
    if Tq:     # a 'seq' backward runs after a 'seq' forward (32 channels a program where the grid has it)
        seq_after = dict(SCAN_FWD="seq", SCAN_BD_MAX=32 if 32 in grid["BD_SEQ"] else grid["BD_SEQ"][0],
                         SCAN_WARPS=grid["WARPS_SEQ"][0])
    ios = grid.get("SEQ_IO", (saved["SCAN_SEQ_IO"],))     # SCAN_SEQ_IO applies to both 'seq' kernels of a call
    settings += [dict(kind="fwd", SCAN_FWD="seq", SCAN_T=T, SCAN_BD_MAX=bd, SCAN_WARPS=w, SCAN_SEQ_IO=io)
                 for T, bd, w, io in itertools.product(Tq, grid.get("BD_SEQ", ()), grid.get("WARPS_SEQ", ()), ios)]
    settings += [dict(seq_after, kind="fwd_bwd", SCAN_BWD="seq", SCAN_T=T, SCAN_BWD_BD_MAX=bd, SCAN_WARPS_BWD=w, SCAN_SEQ_IO=io)
                 for T, bd, w, io in itertools.product(Tq, grid.get("BWD_BD_SEQ", ()), grid.get("WARPS_BWD_SEQ", ()), ios)]
    if only:   # one kernel's settings, and the module's defaults (forward, and forward + backward) to compare with
        settings = [st for st in settings if only in (st.get("SCAN_FWD"), st.get("SCAN_BWD"))
                    or all(st.get(k, saved[k]) == saved[k] for k in saved)]
    summary_ = lambda rows: summary(rows, grid, saved, shape)
    rows = []
    for st in settings:
        for k, v in saved.items(): setattr(ts, k, v)
        for k, v in st.items():
            if k != "kind": setattr(ts, k, v)
        row = dict(st)
        try:
            y, g = run_once(ts, x, gy)
            row["err"] = max([rel(y, y0)] + [rel(a, b) for a, b in zip(g, g0)])
            m = measure(fwd if st["kind"] == "fwd" else both, dev, **kw)
            row["ms"], row["peak_bytes"] = m["ms"], m["peak_bytes"]
            # the GPU time of the call's kernels alone (torch.profiler): at these sizes a call's wall time can be set
            # by the CPU launching its kernels, which a training step that keeps the GPU busy does not pay
            row["kernel_ms"] = (profile_top(fwd if st["kind"] == "fwd" else both, dev, steps=3, top=1)["kernel_ms"]
                                if dev.type == "cuda" else None)
        except Exception as e:                       # a setting that does not compile (registers, shared memory)
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
        if on_rows is not None: on_rows(summary_(rows))     # a cut-off run keeps what it measured, with its best so far
    for k, v in saved.items(): setattr(ts, k, v)
    return summary_(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shapes", default="vim_fashion,vim_tiny,long", help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and two settings (for Triton's interpreter)")
    ap.add_argument("--only", choices=("tiles", "states", "seq"), default=None,
                    help="time only the settings of this kernel (forward or backward), and the module's defaults")
    a = ap.parse_args(argv)
    import cab_bench.ops.triton_scan as ts
    why = ts.triton_unavailable()
    if why: raise SystemExit(f"scan_tune: the Triton scan cannot run here: {why}")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    defaults = {k: getattr(ts, k) for k in ts.LAUNCH_KEYS}
    bad = [k for k in a.shapes.split(",") if k not in SHAPES]
    if bad and not a.smoke: raise SystemExit(f"scan_tune: --shapes {bad} not allowed; expected some of {', '.join(SHAPES)}")
    shapes = {"tiny": (2, 8, 21, 4, 2)} if a.smoke else {k: SHAPES[k] for k in a.shapes.split(",")}
    grid = (dict(T=tuple(sorted({8, ts.SCAN_T})), BD_MAX=(ts.SCAN_BD_MAX,), WARPS=(ts.SCAN_WARPS,), WARPS_BWD=(ts.SCAN_WARPS_BWD,),
                 BWD_BD_MAX=tuple(sorted({4, ts.SCAN_BWD_BD_MAX})), T_STATES=(32,), BD_STATES=(ts.SCAN_BD_MAX,),
                 WARPS_STATES=(ts.SCAN_WARPS,), T_SEQ=(8,), BD_SEQ=(4,), WARPS_SEQ=(1,), BWD_BD_SEQ=(8,),
                 WARPS_BWD_SEQ=(1,), SEQ_IO=("step", "staged")) if a.smoke else GRID)   # smoke: around the defaults, one 'states' and one 'seq' forward
    res, t0, env = {}, time.time(), environment()
    long_saved = (ts.SCAN_LONG_L, ts.SCAN_LONG)
    wide_saved = (ts.SCAN_WIDE_ROWS, ts.SCAN_WIDE)
    ts.SCAN_LONG_L = ts.SCAN_WIDE_ROWS = None   # every shape takes the module-level settings being tuned
    try:
        for name, shape in shapes.items():
            save = lambda: write_json(a.out, dict(study="scan_tune", environment=env, defaults=defaults, grid=grid,
                                                  long_settings=dict(from_L=long_saved[0], settings=long_saved[1]),
                                                  wide_settings=dict(from_rows=wide_saved[0], settings=wide_saved[1]),
                                                  seconds=time.time() - t0, shapes=res))
            # after each setting the shape's table so far (complete: False), so a cut-off run keeps it and its best
            res[name] = tune(ts, shape, dev, grid if a.smoke else SHAPE_GRIDS.get(name, grid), a.smoke,
                             on_rows=lambda part: (res.__setitem__(name, dict(part, complete=False)), save()), only=a.only)
            res[name]["complete"] = True
            save()
    finally:
        for k, v in defaults.items(): setattr(ts, k, v)
        ts.SCAN_LONG_L, ts.SCAN_LONG = long_saved
        ts.SCAN_WIDE_ROWS, ts.SCAN_WIDE = wide_saved
    for name, r in res.items():
        print(name, "defaults:", r["default_fwd_bwd_ms"], "ms; best:", r["best"])
        print(name, "by kernel time: defaults:", r["default_fwd_bwd_kernel_ms"], "ms; best:", r["best_kernel"])


if __name__ == "__main__":
    main()
