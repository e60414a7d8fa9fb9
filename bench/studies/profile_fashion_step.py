"""Where a Fashion-MNIST distillation step's time goes on one GPU (the replication grid's pair).

The grid's cells (`bench.studies.replication`) run `default:fashion` -> `vim_fashion` at batch 128: 50 tokens, 24
bidirectional Mamba layers, 6.8M parameters, so the step is small and its speed is set by how many kernels it
launches and how long the CPU takes to issue them, not by arithmetic. This times one optimizer step of each method's
main stage (the trainer's own `train_step`) for each scan backend, and writes a torch.profiler table (CUDA time and
call counts per kernel, and the CPU total) of each timed step, so that the note on speed can say where the time goes.
A single process's step is bound by the CPU issuing kernels; the grid runs several at once and is bound by the GPU,
so the profile's kernel time a step (`profiles[...]['kernel_ms']`) is the number that sets the grid's throughput.
A backend entry may end in `+staged` or `+step`: the 'seq' scan kernels then get a step's values staged once a
chunk, or column by column (`SCAN_SEQ_IO`; `SCAN_WIDE` stages by default). `triton` takes every Triton path; `auto`
takes the Triton conv too where causal-conv1d is absent, `chunked` none.
MOHAWK's matrix orientation (every layer's transfer matrices averaged per head, with gradient) is timed as a step,
and the matrix alone (forward + backward of one direction of one layer at the grid's shape) each way: the per-head
block factorisation (`head_scan_matrix`, eager at the block sizes `--blocks` names, and compiled at Q 4, which takes
minutes to compile), the Triton kernels (`ops.triton_matrix`, tiles of 16, 32 and 64) and the mean of the
per-channel matrices (`selective_scan_matrix`, compiled). The orientation step on `auto` takes the Triton kernels, on
`chunked` the eager blocks.

    python -m bench.studies.profile_fashion_step --out bench/results/profile_fashion_step_h200.json
    python -m bench.studies.profile_fashion_step --only steps --stages cab,soft_kd --backends auto,auto+step,chunked
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

from cab_bench.distill import build_method
from cab_bench.models import load_teacher, create_student
from cab_bench.models.mamba import head_scan_matrix, selective_scan_matrix
from cab_bench.ops.triton_matrix import head_scan_matrix_triton
from cab_bench.ops import use_backend, backend_report
from bench.bench_step import StageStep
from bench.benchlib import profile_top, sync

STAGES = dict(cab=("cab", dict(kl=1.0, ce=0.0, lambda_align=3.0, tau=1.0)), soft_kd=("soft_kd", dict(tau=1.0, ce=0.0)),
              mohawk=("mohawk", dict(tau=1.0, ce=0.0)))   # MOHAWK's first stage: matrix orientation (every layer's matrices)


def _time(step, batch, dev, n=20, warm=5)->float:
    for _ in range(warm): step(batch)
    sync(dev); t = time.perf_counter()
    for _ in range(n): step(batch)
    sync(dev); return (time.perf_counter() - t) / n * 1e3


def matrix_ms(dev, b=128, l=50, E=384, N=16, H=3, n=10, qs=(4,), out:dict|None=None, save=lambda: None,
              compiled:bool=True, triton_blocks=(16, 32, 64))->dict:
    """Forward + backward of one direction's per-head matrix at the grid's shape, each way, in ms (and peak MiB), into
    `out`; `save()` after each way, so that a run cut off at its time limit keeps the ways it timed."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(b, l, E, generator=g) * 0.1 + 1e-3, -torch.rand(E, N, generator=g) * 8 - 0.5,
          torch.randn(b, l, N, generator=g), torch.randn(b, l, N, generator=g)]
    xs = [x.to(dev).requires_grad_() for x in xs]
    w = torch.randn(b, H, l, l, device=dev)
    # the compiled block path last: its compile takes minutes
    ways = {"per_channel_mean/compiled": torch.compile(selective_scan_matrix, dynamic=False)} if compiled else {}
    for q in qs: ways[f"head_blocks_Q{q}/eager"] = lambda *x, q=q: head_scan_matrix(*x, chunk=q)
    for bl in triton_blocks: ways[f"head_triton_BL{bl}"] = lambda *x, bl=bl: head_scan_matrix_triton(*x, block=bl)
    if compiled: ways["head_blocks_Q4/compiled"] = torch.compile(lambda *x: head_scan_matrix(*x, chunk=4), dynamic=False)
    out, ref = ({} if out is None else out), None
    for k, f in ways.items():
        def step(_):
            y = f(*xs, H); (y * w).sum().backward(); return y
        y = step(None)
        if ref is None: ref = y.detach()
        err = ((y.detach() - ref).abs().max() / ref.abs().max()).item()
        torch.cuda.reset_peak_memory_stats(dev)
        ms = _time(step, None, dev, n=n, warm=2)
        out[k] = dict(ms=round(ms, 3), peak_mib=round(torch.cuda.max_memory_allocated(dev) / 2**20, 1), rel_err_vs_first=err)
        print(f"matrix {k}: {ms:.2f} ms fwd+bwd, peak {out[k]['peak_mib']} MiB, rel. diff {err:.1e}", flush=True)
        for x in xs: x.grad = None
        save()
    return out


@contextlib.contextmanager
def seq_io(io:str|None):
    "The Triton scan's 'seq' kernels with `SCAN_SEQ_IO = io` for many rows (SCAN_WIDE) inside the block; None: unchanged."
    if io is None:
        yield; return
    import cab_bench.ops.triton_scan as ts
    if io not in ts.SEQ_IO: raise SystemExit(f"profile_fashion_step: '+{io}' not allowed; expected one of {ts.SEQ_IO}")
    saved = ts.SCAN_WIDE
    ts.SCAN_WIDE = dict(saved, SCAN_SEQ_IO=io)
    try: yield
    finally: ts.SCAN_WIDE = saved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/profile_fashion_step.json"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--blocks", default="4", help="comma-separated block sizes Q of `head_scan_matrix` to time")
    ap.add_argument("--only", default=None, help="comma-separated: matrix, steps (default both)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated steps to time (of {', '.join(STAGES)})")
    ap.add_argument("--backends", default="auto,chunked",
                    help="comma-separated backends for the steps, each optionally ending in +staged or +step (SCAN_SEQ_IO)")
    ap.add_argument("--no_compiled", action="store_true", help="matrix: only the eager block path (the compiles take minutes)")
    a = ap.parse_args(argv)
    only = set(a.only.split(",")) if a.only else {"matrix", "steps"}
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(a.batch, 1, 28, 28, generator=g).to(dev), torch.randint(0, 10, (a.batch,), generator=g).to(dev))
    res = dict(study="profile_fashion_step", device=torch.cuda.get_device_name(0), torch=torch.__version__, batch=a.batch,
               report=backend_report("cuda"), step_ms={}, profile={}, profiles={})
    if "matrix" in only:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        matrix_ms(dev, qs=tuple(int(q) for q in a.blocks.split(",")), out=res.setdefault("matrix_ms", {}),
                  save=lambda: a.out.write_text(json.dumps(res, indent=1, default=str)), compiled=not a.no_compiled)
    for entry in a.backends.split(",") if "steps" in only else ():
        be, _, io = entry.partition("+")
        with use_backend(be), seq_io(io or None):
            import cab_bench.ops.triton_scan as ts
            res.setdefault("reports", {})[entry] = dict(backend_report("cuda"), scan_settings=ts.launch_settings(50, a.batch * 384))
            for label, (m, opts) in STAGES.items():
                if label not in a.stages.split(","): continue
                # MOHAWK's orientation runs no scan: `auto` forms its matrices with the Triton kernels, `chunked` with the eager blocks
                teacher = load_teacher("default:fashion", device=dev)
                torch.manual_seed(1)
                meth = build_method(m, teacher, create_student("vim_fashion"), **opts)
                stage = meth.stages[-1].name if m == "soft_kd" else meth.stages[0].name
                st = StageStep(meth, stage, dev)
                key = f"{label}/{stage}/{entry}"
                res["step_ms"][key] = ms = _time(st, batch, dev, n=5 if label == "mohawk" else 20, warm=2 if label == "mohawk" else 5)
                print(f"{key}: {ms:.1f} ms/step", flush=True)
                if be != "chunked" and label != "mohawk":
                    res["profiles"][key] = prof = profile_top(lambda: st(batch), dev, steps=3, top=40)
                    if label == "cab" and entry == "auto": res["profile"] = prof          # the table earlier notes cite
                    print(f"{key}: {prof['kernel_ms']:.1f} ms of GPU kernels a step", flush=True)
                    for k in prof["kernels"][:30]: print(f"{k['device_ms']:8.3f} ms {k['calls']:6.1f}x  {k['name']}")
                st.release(); del meth, teacher; torch.cuda.empty_cache()
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text(json.dumps(res, indent=1, default=str))   # after each step timed: a cut-off run keeps them


if __name__ == "__main__":
    main()
