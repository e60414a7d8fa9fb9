"""Where do the SSD paths' gradients part ways at long lengths? Each path against a float64 reference.

The fla path (`backend='triton'` for `ssd_scan`: fla's chunked forward with our backward) and our chunked SSD gave gradients 1.6e-2 (L 1K) to 0.48
(L 16K) apart in relative norm at the bench shape, with fp32 inputs. Two fast paths differing says nothing about which
one is right, so here each is compared with the chunked path run in float64 (itself checked against the sequential
reference at short lengths in the tests), on the same inputs and the same output cotangent, at L 1K to 16K.
Also: the same comparison with the decay made milder (dt smaller), to see whether the gap is the long-range product
of decays in fp32/tf32 (a conditioning effect) rather than an error in a backward.

    python -m bench.studies.ssd_precision --out bench/results/ssd_precision_h200.json

`bench/results/device_logs/ssd_precision_chunked_h200.log` is a first run in which the fla path was asked for by a
wrong backend name (so only the chunked rows are there: fp32 chunked vs float64, 2.5e-7 at every length).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cab_bench.ops import random_ssd_inputs, ssd_scan, backend_report

KEYS = ("x", "dt", "A", "B", "C")


def _grads(fn, x, gy, dtype, **kw):
    a = {k: x[k].detach().to(dtype).clone().requires_grad_() for k in KEYS}
    y = fn(**a, **kw)
    (y.double() * gy).sum().backward()
    return y.detach().double(), {k: a[k].grad.double() for k in KEYS}


def rel(a, b): return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def case(L:int, h:int, dt_scale:float, seed:int=0)->dict:
    x = random_ssd_inputs(b=1, l=L, h=h, p=64, g=1, n=128, dtype=torch.float64, device="cuda", seed=seed)
    x["dt"] = x["dt"] * dt_scale
    g = torch.Generator(device="cuda").manual_seed(1)
    gy = torch.randn(x["x"].shape, generator=g, device="cuda", dtype=torch.float64)
    kw = dict(chunk_size=64, dt_softplus=True)
    y0, g0 = _grads(ssd_scan, x, gy, torch.float64, backend="chunked", **kw)
    out, got = dict(L=L, heads=h, dt_scale=dt_scale), {}
    for be in ("chunked", "triton"):
        try:
            got[be] = _grads(ssd_scan, x, gy, torch.float32, backend=be, **kw)
            y, gr = got[be]
            out[be] = {"y": rel(y, y0), **{k: rel(gr[k], g0[k]) for k in KEYS}}
        except Exception as e:                   # a path that cannot run here is reported, not hidden
            out[be] = {"error": f"{type(e).__name__}: {e}"}
    if len(got) == 2:
        (yc, gc), (yf, gf) = got["chunked"], got["triton"]
        out["triton_vs_chunked"] = {"y": rel(yf, yc), **{k: rel(gf[k], gc[k]) for k in KEYS}}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/ssd_precision.json"))
    ap.add_argument("--lengths", default="1024,4096,8192,16384")
    a = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False           # the comparison is of the algorithms, in plain fp32
    rows, t0 = [], time.time()
    for L in map(int, a.lengths.split(",")):
        for s in (1.0, 0.1):
            rows.append(case(L, 4, s)); print(json.dumps(rows[-1]), flush=True)
    res = dict(study="ssd_precision", device=torch.cuda.get_device_name(0), torch=torch.__version__,
               backend_report=backend_report("cuda"), rows=rows, seconds=time.time() - t0)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
