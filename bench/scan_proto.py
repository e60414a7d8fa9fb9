"""Prototype: selective-scan chunk functions built on torch's associative_scan (compiled), vs the cumsum chunked path."""
import json, os, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib as bl  # noqa
import cab_bench.ops
from cab_bench.ops.selective_scan import random_scan_inputs, selective_scan_ref
from torch._higher_order_ops.associative_scan import associative_scan


def comb(x, y):
    a1, b1 = x
    a2, b2 = y
    return a2 * a1, a2 * b1 + b2


def fwd(u, dt, A, B, C, h_in, g: int):
    "u, dt (b,d,T); A (d,N); B, C (b,G,N,T); h_in (b,d,N) -> y (b,d,T), h_last (b,d,N)"
    b, d, T = u.shape
    N = A.shape[1]
    a = torch.exp(dt[:, :, None, :] * A[:, :, None])                                    # (b,d,N,T)
    x = ((dt * u).view(b, g, d // g, 1, T) * B.unsqueeze(2)).view(b, d, N, T)
    x = torch.cat([x[..., :1] + a[..., :1] * h_in[..., None], x[..., 1:]], -1)
    _, h = associative_scan(comb, (a, x), dim=3, combine_mode="pointwise")
    y = (h.view(b, g, d // g, N, T) * C.unsqueeze(2)).sum(3).view(b, d, T)
    return y, h[..., -1]


def bwd(u, dt, A, B, C, h_in, gy, carry, g: int):
    b, d, T = u.shape
    N = A.shape[1]
    a = torch.exp(dt[:, :, None, :] * A[:, :, None])
    dtu = dt * u
    Bx = B.unsqueeze(2).expand(b, g, d // g, N, T).reshape(b, d, N, T)
    x = dtu[:, :, None, :] * Bx
    x = torch.cat([x[..., :1] + a[..., :1] * h_in[..., None], x[..., 1:]], -1)
    _, h = associative_scan(comb, (a, x), dim=3, combine_mode="pointwise")
    hprev = torch.cat([h_in[..., None], h[..., :-1]], -1)
    r = (gy.view(b, g, d // g, 1, T) * C.unsqueeze(2)).view(b, d, N, T)
    r = torch.cat([r[..., :-1], r[..., -1:] + carry[..., None]], -1)
    an = torch.cat([a[..., 1:], torch.ones_like(a[..., :1])], -1)
    _, gh = associative_scan(comb, (an, r), dim=3, reverse=True, combine_mode="pointwise")
    gx = gh * a * hprev
    gA = (gx * dt[:, :, None, :]).sum((0, 3))
    ghB = (gh * Bx).sum(2)
    gdt = (gx * A[:, :, None]).sum(2) + ghB * u
    gu = ghB * dt
    gB = (gh * dtu[:, :, None, :]).view(b, g, d // g, N, T).sum(2)
    gC = (gy[:, :, None, :] * h).view(b, g, d // g, N, T).sum(2)
    return gu, gdt, gA, gB, gC, gh[..., 0] * a[..., 0]


def main():
    dev = torch.device("cuda")
    out = {}
    for dyn in (False, True):
        F_, B_ = torch.compile(fwd, dynamic=dyn), torch.compile(bwd, dynamic=dyn)
        for (b, d, l, N) in [(128, 384, 197, 16), (2, 1536, 2048, 16), (2, 1536, 8192, 16)]:
            key = f"dyn{int(dyn)}_{b}x{d}x{l}x{N}"
            x = random_scan_inputs(b, d, l, N, bc="shared", dtype=torch.float32, device=dev, seed=0)
            u, dt, A = x["u"], torch.nn.functional.softplus(x["delta"]), x["A"]
            Bm, Cm = x["B"][:, None], x["C"][:, None]         # (b,1,N,L)
            h0 = torch.zeros(b, d, N, device=dev)
            gy = torch.randn(b, d, l, device=dev)
            try:
                t0 = time.time(); y, hl = F_(u, dt, A, Bm, Cm, h0, 1); torch.cuda.synchronize(); cf = time.time() - t0
                t0 = time.time(); g = B_(u, dt, A, Bm, Cm, h0, gy, torch.zeros_like(h0), 1); torch.cuda.synchronize(); cb = time.time() - t0
                res = dict(compile_fwd_s=cf, compile_bwd_s=cb)
                if l <= 2048:
                    # check vs autograd of the reference (float64)
                    leaf = [t.double().clone().requires_grad_() for t in (u, dt, A, x["B"], x["C"])]
                    yr = selective_scan_ref(leaf[0], leaf[1], leaf[2], leaf[3], leaf[4])
                    grads = torch.autograd.grad(yr, leaf, gy.double())
                    res["err_y"] = ((y.double() - yr).abs().max() / yr.abs().max()).item()
                    names = ["gu", "gdt", "gA", "gB", "gC"]
                    for nm, mine, ref in zip(names, g[:5], grads):
                        mine = mine.reshape(ref.shape) if nm in ("gB", "gC") else mine
                        res["err_" + nm] = ((mine.double() - ref).abs().max() / ref.abs().max()).item()
                torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
                res["fwd_ms"] = bl.measure(lambda: F_(u, dt, A, Bm, Cm, h0, 1), dev, budget_s=1)["ms"]
                res["fwd_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                torch.cuda.reset_peak_memory_stats()

                def fb():
                    F_(u, dt, A, Bm, Cm, h0, 1); B_(u, dt, A, Bm, Cm, h0, gy, torch.zeros_like(h0), 1)
                res["fwd_bwd_ms"] = bl.measure(fb, dev, budget_s=1)["ms"]
                res["fwd_bwd_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            except Exception as e:  # noqa
                res = dict(error=f"{type(e).__name__}: {str(e)[:800]}")
            out[key] = res
            print(key, json.dumps(res), flush=True)
    # profile the static variant at the Vim-Tiny shape
    try:
        F_, B_ = torch.compile(fwd, dynamic=False), torch.compile(bwd, dynamic=False)
        b, d, l, N = 128, 384, 197, 16
        x = random_scan_inputs(b, d, l, N, bc="shared", dtype=torch.float32, device=dev, seed=0)
        u, dt, A = x["u"], torch.nn.functional.softplus(x["delta"]), x["A"]
        Bm, Cm = x["B"][:, None], x["C"][:, None]
        h0 = torch.zeros(b, d, N, device=dev); gy = torch.randn(b, d, l, device=dev)
        for _ in range(3): F_(u, dt, A, Bm, Cm, h0, 1); B_(u, dt, A, Bm, Cm, h0, gy, torch.zeros_like(h0), 1)
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(5): F_(u, dt, A, Bm, Cm, h0, 1); B_(u, dt, A, Bm, Cm, h0, gy, torch.zeros_like(h0), 1)
            torch.cuda.synchronize()
        txt = p.key_averages().table(sort_by="cuda_time_total", row_limit=20)
        print(txt)
        Path(os.environ.get("OUT", "/tmp"), "proto_profile.txt").write_text(txt)
    except Exception as e:  # noqa
        print("profile failed", e)
    Path(os.environ.get("OUT", "/tmp"), "proto.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
