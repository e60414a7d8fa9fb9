"""Chunked selective scan, both forms (cumsum, scan), eager and compiled, vs the sequential reference and mamba-ssm's kernel.

    python -m bench.studies.chunked_compile --out bench/results/chunked_compile_h200.json

At ENV.md's Vim-Tiny shape (batch 128, d_inner 384, L 197, N 16, fp32, B/C per batch), forward and forward+backward,
median of CUDA-event timings after warm-up; also checks that the compiled path matches the eager one and the kernel.
"""
import argparse, json, os, sys
from pathlib import Path
import torch
from .. import benchlib as bl
import cab_bench.ops
from cab_bench.ops.selective_scan import random_scan_inputs
ss_mod = sys.modules["cab_bench.ops.selective_scan"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", type=int, nargs=4, default=[128, 384, 197, 16])
    ap.add_argument("--chunk_elems", type=int, nargs="*", default=[],
                    help="also time the compiled chunked path with these CAB_BENCH_CHUNK_ELEMS budgets")
    a = ap.parse_args(argv)
    dev = bl.device()
    b, d, l, N = a.shape
    x = random_scan_inputs(b, d, l, N, bc="shared", dtype=torch.float32, device=dev, seed=0)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    leaf = {k: x[k].clone().requires_grad_() for k in names}
    gy = torch.randn(b, d, l, device=dev)

    def call(path, grad, form=None):
        def f():
            if form is None: y = cab_bench.ops.selective_scan(*(leaf[k] for k in names), True, backend=path)
            else: y = ss_mod.selective_scan_chunked(*(leaf[k] for k in names), True, form=form)
            if grad: torch.autograd.backward(y, gy)
            return y
        return f

    res, outs = {}, {}
    # (name, backend, CAB_BENCH_COMPILE, form)
    variants = [("ref", "ref", "1", None), ("chunked_cumsum_eager", "chunked", "0", "cumsum"),
                ("chunked_cumsum_compiled", "chunked", "1", "cumsum"), ("chunked_scan_compiled", "chunked", "1", "scan"),
                ("chunked_default", "chunked", "1", None)]
    if dev.type == "cuda" and cab_bench.ops.kernel("selective_scan")[0] is not None: variants.append(("cuda", "cuda", "1", None))
    variants += [(f"chunked_scan_compiled_elems{e}", "chunked", "1", "scan", e) for e in a.chunk_elems]
    for name, path, comp, form, *elems in variants:
        if dev.type != "cuda" and comp == "1" and form is not None: continue      # compiled forms: GPU only
        os.environ["CAB_BENCH_COMPILE"] = comp
        if elems: os.environ["CAB_BENCH_CHUNK_ELEMS"] = str(elems[0])
        for k in leaf.values(): k.grad = None
        y = call(path, True, form)()
        outs[name] = [y.detach()] + [leaf[k].grad.clone() for k in names]
        res[name] = dict(fwd=bl.measure(call(path, False, form), dev, budget_s=2), fwd_bwd=bl.measure(call(path, True, form), dev, budget_s=2))
        bl.log(f"{name}: fwd {res[name]['fwd']['ms']:.2f} ms, fwd+bwd {res[name]['fwd_bwd']['ms']:.2f} ms")
    ref = outs["ref"]
    err = {n: max(((o - r).abs().max() / r.abs().max().clamp_min(1e-30)).item() for o, r in zip(v, ref)) for n, v in outs.items()}
    ratio = {n: res["ref"]["fwd_bwd"]["ms"] / res[n]["fwd_bwd"]["ms"] for n in res}
    out = dict(env=bl.environment(), shape=dict(batch=b, d=d, L=l, N=N, dtype="float32"), results=res,
               max_rel_err_vs_ref=err, speedup_vs_ref_fwd_bwd=ratio,
               target=dict(what="chunked fwd+bwd at least 10x faster than the sequential reference",
                           **{k: v for k, v in ratio.items() if k.startswith("chunked")}))
    bl.write_json(a.out, out)
    print(json.dumps(dict(speedup=ratio, err=err), indent=1))


if __name__ == "__main__":
    main()
