"""The build-free scan paths: our Triton selective scan (`ops.triton_scan`) and SSD through fla-core (`ops.fla_ssd`).

On a CPU: the Triton kernels in Triton's interpreter (in a subprocess, since `TRITON_INTERPRET` must be set before
Triton is imported), the fla mapping and our backward with the materialised kernel `gla_ref`, and the dispatch.
On a GPU (`cuda` marker): the real kernels against the sequential reference and, where built, mamba-ssm; outputs and
every gradient, every option, random shapes including lengths that are not a multiple of the chunk.
"""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cab_bench.core import seed_everything
from cab_bench.ops import (kernel, backend_report, pick_backend, selective_scan, ssd_scan, random_scan_inputs,
                           random_ssd_inputs, use_backend, triton_path)
from cab_bench.ops.backend import auto_refusal
from cab_bench.ops.selective_scan import selective_scan_ref
from cab_bench.ops.ssd import ssd_scan_ref
from cab_bench.ops.fla_ssd import ssd_scan_fla, gla_ref, fla_unavailable, fla_backward_unsafe

SCAN_OPTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
SSD_OPTS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def rel(a, b):
    """Relative error in norm (robust for gradients summed over many elements); an exactly zero reference (dA at L = 1
    without an initial state) is compared against a floor of 1e-6 instead of dividing by zero."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-6)).item()


def scan_case(fn, x, keys, softplus, dtype, through_state=True):
    "Output, last state and the gradients of `keys` for one random cotangent (on the state too, unless not `through_state`)."
    a = {k: x[k].detach().to(dtype).clone().requires_grad_() for k in keys}
    y, h = fn(**a, delta_softplus=softplus, return_last_state=True)
    g = torch.Generator(device=x["u"].device).manual_seed(1)
    gy = torch.randn(y.shape, generator=g, device=y.device, dtype=torch.float64)
    gh = torch.randn(h.shape, generator=g, device=y.device, dtype=torch.float64)
    ((y.double() * gy).sum() + (h.double() * gh).sum() * through_state).backward()
    return y.detach(), h.detach(), {k: a[k].grad for k in keys}


def rel_scaled(a, b, scale):
    """`rel`, except that a reference gradient much smaller than the case's largest (`scale`: exactly zero for dA at
    L = 1 without an initial state) is compared on a floor of 1e-3 * scale: float32 leaves ~1e-8 there, which is exact
    to the case's precision but would read as a large error relative to zero."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-3 * scale)).item()


def compare_scan(fn, x, keys, softplus, dtype, tol, ref=selective_scan_ref):
    y, h, gr = scan_case(fn, x, keys, softplus, dtype)
    y0, h0, g0 = scan_case(ref, x, keys, softplus, torch.float64 if ref is selective_scan_ref else dtype)
    assert y.dtype == dtype
    scale = max(g0[k].double().norm().item() for k in keys)
    errs = {"y": rel(y, y0), "h": rel(h, h0), **{k: rel_scaled(gr[k], g0[k], scale) for k in keys}}
    bad = {k: e for k, e in errs.items() if not e < tol}
    assert not bad, f"relative errors above {tol}: {bad}"


# ---------------------------------------------------------------- CPU: the Triton kernels in the interpreter
INTERP = textwrap.dedent('''
    import itertools, random, sys, torch
    from cab_bench.ops.triton_scan import selective_scan_triton
    from cab_bench.ops.selective_scan import random_scan_inputs
    from cab_bench.ops import selective_scan
    sys.path.insert(0, {tests!r})
    from test_kernels import compare_scan, SCAN_OPTS
    import cab_bench.ops.triton_scan as ts
    if {part_max} is not None: ts.SCAN_BC_PART_MAX = {part_max}     # 0: per-token dB/dC by atomic adds, not per-block slices
    ts.SCAN_BWD = {bwd!r}                                            # which backward kernel
    ts.SCAN_FWD = {fwd!r}                                            # which forward kernel
    if {T} is not None: ts.SCAN_T = {T}                              # steps per chunk
    ts.SCAN_SEQ_IO = {io!r}                                          # how the 'seq' kernels get a step's values
    cases = {cases}
    for bc, b, d, l, N, opts, sp, seed in cases:
        x = random_scan_inputs(b=b, d=d, l=l, N=N, bc=bc, dtype=torch.float64, seed=seed)
        if not sp: x["delta"] = torch.nn.functional.softplus(x["delta"])
        keys = [k for k in SCAN_OPTS if k in ("u", "delta", "A", "B", "C") or k in opts]
        compare_scan(selective_scan_triton, x, keys, sp, torch.float32, 1e-4)
        # the dispatch reaches it with backend='triton' (allowed on a CPU only under the interpreter)
        args = [x[k].float() for k in ("u", "delta", "A", "B", "C")]
        if sp: args[1] = torch.nn.functional.softplus(args[1])
        torch.testing.assert_close(selective_scan(*args, backend="triton"), selective_scan_triton(*args))
    print("ok", len(cases))
''')


def run_interpreted(cases, part_max=None, bwd="tiles", fwd="tiles", T=None, io="step"):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    code = INTERP.format(tests=os.path.dirname(__file__), cases=repr(cases), part_max=repr(part_max), bwd=bwd, fwd=fwd,
                         T=repr(T), io=io)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("fwd,bwd,part_max,T,io", [("tiles", "tiles", None, None, "step"), ("tiles", "tiles", 0, None, "step"),
                                                   ("tiles", "states", None, None, "step"), ("states", "states", None, 8, "step"),
                                                   ("states", "tiles", None, None, "step"), ("seq", "seq", None, None, "step"),
                                                   ("tiles", "seq", 0, 8, "step"), ("seq", "seq", None, None, "staged"),
                                                   ("seq", "seq", 0, 8, "staged")])
def test_triton_scan_interpreted_all_options(fwd, bwd, part_max, T, io):
    """Every option at once and none, the three B/C layouts, a partly filled chunk (tiny shapes); per-token dB/dC both
    ways: per-block slices summed after (the default at these sizes) and atomic adds (`SCAN_BC_PART_MAX = 0`); both
    forward kernels (`SCAN_FWD`) and both backward kernels (`SCAN_BWD`; the 'states' kernel's atomic adds are run by
    the random-shapes test), each forward with each backward (they share the per-chunk checkpoints); the 'seq'
    kernels (one step at a time) after themselves and, with atomic adds and 8-step chunks, after the 'tiles' forward;
    the 'seq' kernels with staged inputs and outputs, with per-block and atomic dB/dC (8-step chunks: 37 steps are
    walked as 5 chunks of 8, 9 as 2 of 5, the staging tiles 8 wide)."""
    all_opts = ("D", "z", "delta_bias", "initial_state")
    run_interpreted([("shared", 2, 32, 37, 4, all_opts, True, 0), ("grouped", 1, 32, 5, 3, (), False, 1),
                     ("const", 2, 4, 9, 2, all_opts, True, 2)], part_max, bwd, fwd, T, io)


@pytest.mark.slow
def test_triton_scan_interpreted_random_shapes():
    "Random shapes and option subsets (lengths around the 16-step chunk, N not a power of two)."
    rng = __import__("random").Random(0)
    cases = []
    for i in range(8):
        opts = tuple(o for o in ("D", "z", "delta_bias", "initial_state") if rng.random() < 0.5)
        cases.append((rng.choice(["const", "shared", "grouped"]), rng.randint(1, 3), rng.choice([2, 4, 6, 12]),
                      rng.choice([1, 15, 16, 17, 33, 70]), rng.randint(1, 9), opts, rng.random() < 0.5, i))
    run_interpreted(cases)
    run_interpreted(cases[::2], part_max=0, bwd="states")  # the 'states' backward on half the cases, dB/dC by atomic adds
    run_interpreted(cases[1::2], bwd="states", fwd="states", T=32)   # the 'states' forward, longer chunks, the other half
    run_interpreted(cases[::3], part_max=0, bwd="seq", fwd="seq")     # the 'seq' kernels on a third, dB/dC by atomic adds
    run_interpreted(cases[1::3], bwd="seq", fwd="seq", io="staged")   # staged 'seq' kernels on another third


# ---------------------------------------------------------------- CPU: fla's mapping and our backward
@pytest.mark.parametrize("seed", range(4))
def test_fla_mapping_and_backward_with_materialised_kernel(seed):
    """ssd_scan_fla with `gla_ref` in place of fla's kernel: every option, random shapes, every gradient (float64);
    lengths within one chunk of the backward's decay-gradient sum and over several (`fla_ssd.dg_chunked`)."""
    rng = __import__("random").Random(seed)
    g = rng.choice([1, 2])
    l = rng.randint(1, 20) if seed % 2 == 0 else rng.randint(33, 100)
    shape = dict(b=rng.randint(1, 2), l=l, h=g * rng.randint(1, 2), p=rng.randint(1, 4), g=g,
                 n=rng.randint(1, 5), seed=seed)
    x = random_ssd_inputs(dtype=torch.float64, **shape)
    opts = [o for o in ("D", "z", "dt_bias", "initial_states") if rng.random() < 0.7]
    keys = ["x", "dt", "A", "B", "C", *opts]
    lim = rng.choice([(0.0, math.inf), (0.02, 0.08)])

    def run(fn, **kw):
        a = {k: x[k].clone().requires_grad_() for k in keys}
        y, s = fn(**a, dt_softplus=True, dt_limit=lim, return_final_states=True, **kw)
        (y.square().sum() + (s * 0.5).sum()).backward()
        return y, s, {k: a[k].grad for k in keys}

    y, s, gr = run(ssd_scan_fla, gla=gla_ref)
    y0, s0, g0 = run(ssd_scan_ref)
    torch.testing.assert_close(y, y0); torch.testing.assert_close(s.double(), s0)
    for k in keys: torch.testing.assert_close(gr[k], g0[k], msg=k)


def gla_chunked64(q, k, v, g, h0=None, T=128):
    """A float64 GLA forward in chunks of `T` steps (exact, memory linear in L): `gla_ref` materialises an (L, L)
    decay matrix, too large at language-model lengths. Returns (o, final state) in the inputs' dtype."""
    cd = torch.float64
    q, k, v, g = q.to(cd), k.to(cd), v.to(cd), g.to(cd)
    S = torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3], dtype=cd) if h0 is None else h0.to(cd).clone()
    outs = []
    for c0 in range(0, q.shape[1], T):
        qc, kc, vc = q[:, c0:c0 + T], k[:, c0:c0 + T], v[:, c0:c0 + T]
        G = g[:, c0:c0 + T].cumsum(1).transpose(1, 2)                        # (b, H, t) decay from the chunk start
        t = G.shape[-1]
        keep = torch.ones(t, t, dtype=torch.bool).tril()
        W = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~keep, -math.inf))
        o = torch.einsum("bhts,bshv->bthv", torch.einsum("bthk,bshk->bhts", qc, kc) * W, vc)
        outs.append(o + torch.einsum("bht,bthk,bhkv->bthv", torch.exp(G), qc, S))
        S = torch.exp(G[..., -1])[..., None, None] * S + torch.einsum("bhs,bshk,bshv->bhkv", torch.exp(G[..., -1:] - G), kc, vc)
    return torch.cat(outs, 1).to(v.dtype), S.to(v.dtype)


def _tf32_round(t):
    "Round to tf32's 11 significant bits (what a tensor-core float32 matmul keeps)."
    m, e = torch.frexp(t)
    return torch.ldexp(torch.round(m * 2 ** 11) / 2 ** 11, e)


def long_case_errors(l, A_scale, seed, gla=None, dtype=torch.float64, device="cpu"):
    """Errors of ssd_scan_fla's replacement backward (forward kernel `gla`; None: fla's) with `dtype` inputs against
    the chunked SSD in float64, at the long-sequence shape of the fla tests: the output, the state, every gradient."""
    x = random_ssd_inputs(b=1, l=l, h=4, p=64, g=1, n=64, dtype=torch.float64, device=device, seed=seed)
    x["A"] = x["A"] * A_scale
    keys = ["x", "dt", "A", "B", "C", "D", "dt_bias", "initial_states"]

    def run(fn, dtype, **kw):
        a = {k: x[k].to(dtype).clone().requires_grad_() for k in keys}
        y, s = fn(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, D=a["D"], dt_bias=a["dt_bias"],
                  initial_states=a["initial_states"], dt_softplus=True, return_final_states=True, **kw)
        gen = torch.Generator(device=device).manual_seed(2)
        gy = torch.randn(y.shape, generator=gen, device=device, dtype=torch.float64)
        gs = torch.randn(s.shape, generator=gen, device=device, dtype=torch.float64)
        ((y.double() * gy).sum() + (s.double() * gs).sum()).backward()
        return {"y": y.detach(), "s": s.detach(), **{k: a[k].grad for k in keys}}

    ref = run(ssd_scan, torch.float64, backend="chunked")
    got = run(ssd_scan_fla, dtype, backward="fwd-kernels", **({} if gla is None else dict(gla=gla)))
    return {k: float(rel(got[k], ref[k])) for k in ref}


@pytest.mark.parametrize("A_scale,seed", [(1.0, 0), (0.05, 1)])
def test_fla_replacement_backward_exact_at_long_sequences(A_scale, seed):
    """The replacement backward's algorithm at L 8192 (the GPU test's case), with an exact float64 forward kernel:
    every gradient to float64 rounding, so whatever error the GPU shows there is the kernels' rounding. With the
    kernel's outputs rounded to tf32, the gradients that sum over the whole sequence (A, dt_bias) come out several
    times less accurate than the others: the reason the GPU test's float32 bound is wider for those two."""
    exact = long_case_errors(8192, A_scale, seed, gla_chunked64)
    assert max(exact.values()) < 1e-11, exact
    noisy = long_case_errors(8192, A_scale, seed, lambda *a: tuple(_tf32_round(t) for t in gla_chunked64(*a)))
    per_step = max(noisy[k] for k in ("y", "x", "B", "C"))
    assert 5e-5 < per_step < 1e-3, noisy                   # tf32's rounding of the outputs, carried through unchanged
    if A_scale == 1.0:                                      # fast decay: the sums over time cancel the most
        assert max(noisy["A"], noisy["dt_bias"]) > 3 * per_step, noisy


def test_cpu_dispatch_unchanged():
    "On CPU tensors `auto` still takes the PyTorch paths; backend_report says why; fla names its unavailability."
    x = random_scan_inputs(dtype=torch.float32)
    assert pick_backend("selective_scan", "auto", (x["u"],)) == ("chunked", "tensors are not on a CUDA device")
    y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    torch.testing.assert_close(y, selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                                     x["delta_bias"], True))
    r = backend_report("cpu")
    assert r["selective_scan"]["path"] == "chunked" and r["ssd_scan"]["path"] == "chunked"
    if not torch.cuda.is_available():
        assert fla_unavailable() and fla_backward_unsafe() == ""
        with pytest.raises(Exception, match="backend='triton' cannot run ssd_scan"):
            pick_backend("ssd_scan", "triton", (x["u"],))


# ---------------------------------------------------------------- GPU
DEV = "cuda"


def need_triton(op):
    fn, why = triton_path(op)
    if fn is None: pytest.skip(why)


def need_kernel(op):
    fn, why = kernel(op)
    if fn is None: pytest.skip(why)


@pytest.mark.cuda
def test_auto_prefers_build_free_paths():
    need_triton("selective_scan"); need_triton("ssd_scan")
    r = backend_report("cuda")
    refused = auto_refusal("ssd_scan", torch.device(DEV))
    if kernel("ssd_scan")[0] is not None:      # mamba-ssm built: its kernel comes first
        assert r["ssd_scan"]["path"] == "cuda", r["ssd_scan"]
    elif refused:    # fla's own backward unsafe here (Hopper, Triton < 3.7.1): auto keeps the chunked SSD and says why
        assert r["ssd_scan"]["path"] == "chunked" and refused in str(r["ssd_scan"]), r["ssd_scan"]
    else:
        assert r["ssd_scan"]["path"] == "triton" and "backward" in r["ssd_scan"], r["ssd_scan"]
    want = "cuda" if kernel("selective_scan")[0] else "triton"
    assert r["selective_scan"]["path"] == want
    assert r["causal_conv1d"]["path"] == ("cuda" if kernel("causal_conv1d")[0] else "triton"), r["causal_conv1d"]
    if want == "triton":   # the record says which Triton kernels the scans get
        assert r["selective_scan"]["launch"]["wide"]["SCAN_FWD"] in ("tiles", "states", "seq"), r["selective_scan"]
    x = random_scan_inputs(device=DEV, dtype=torch.float32)
    # an initial state, which the mamba-ssm kernel lacks, goes to the Triton kernel
    path, _ = pick_backend("selective_scan", "auto", (x["u"],), unsupported="initial_state")
    assert path == "triton"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", range(5))
def test_triton_conv_matches_reference(case, dtype):
    """The Triton causal conv against the float64 definition on the GPU: output, final states and the gradients of x,
    weight and bias; with and without bias and SiLU, widths 2-4, lengths off the tile and shorter than the conv,
    channel-first and channel-contiguous (Mamba-2's transposed view) inputs; through `causal_conv1d(backend='triton')`.
    Without causal-conv1d, `auto` takes it on CUDA tensors."""
    need_triton("causal_conv1d")
    from cab_bench.ops import causal_conv1d, causal_conv1d_ref
    b, d, l, W, bias, act, last = [(2, 384, 50, 4, True, "silu", False), (3, 1664, 512, 4, True, "silu", True),
                                   (1, 40, 3, 4, False, None, False), (2, 96, 1000, 2, True, None, True),
                                   (4, 8, 33, 3, False, "silu", True)][case]
    g = torch.Generator().manual_seed(case)
    x0 = (torch.randn(b, l, d, generator=g, dtype=torch.float64).transpose(1, 2) if last
          else torch.randn(b, d, l, generator=g, dtype=torch.float64)).to(DEV)
    w0, b0 = torch.randn(d, W, generator=g, dtype=torch.float64).to(DEV), torch.randn(d, generator=g, dtype=torch.float64).to(DEV)
    a = [x0.to(dtype).requires_grad_(), w0.float().requires_grad_(), b0.float().requires_grad_() if bias else None]
    r = [x0.clone().requires_grad_(), w0.clone().requires_grad_(), b0.clone().requires_grad_() if bias else None]
    y, fs = causal_conv1d(*a, act, return_final_states=True, backend="triton")
    y0, fs0 = causal_conv1d_ref(*r, act, return_final_states=True)
    assert y.dtype == dtype and fs.shape == fs0.shape
    gy = torch.randn(y0.shape, generator=g, dtype=torch.float64).to(DEV)
    (y.double() * gy).sum().backward(); (y0 * gy).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel(y, y0) < tol and rel(fs, fs0) < tol
    for p, q, name in zip(a, r, ("x", "weight", "bias")):
        if p is not None: assert rel(p.grad, q.grad) < 10 * tol, (name, rel(p.grad, q.grad))
    want = "cuda" if kernel("causal_conv1d")[0] else "triton"                 # auto: causal-conv1d first, then ours
    assert backend_report("cuda")["causal_conv1d"]["path"] == want


@pytest.mark.cuda
@pytest.mark.parametrize("seed", range(6))
def test_triton_scan_matches_reference_random(seed):
    "Random shapes (lengths off the chunk), layouts and options; float32 and bf16; outputs, state, every gradient."
    need_triton("selective_scan")
    rng = __import__("random").Random(seed)
    bc = ["const", "shared", "grouped"][seed % 3]
    b, d, l, N = rng.randint(1, 3), rng.choice([8, 24, 64]), rng.choice([1, 33, 100, 257, 1000]), rng.choice([1, 4, 16, 13])
    x = random_scan_inputs(b=b, d=d, l=l, N=N, bc=bc, dtype=torch.float64, device=DEV, seed=seed)
    opts = [o for o in ("D", "z", "delta_bias", "initial_state") if rng.random() < 0.6]
    sp = rng.random() < 0.7
    if not sp: x["delta"] = torch.nn.functional.softplus(x["delta"])
    keys = ["u", "delta", "A", "B", "C", *opts]
    fn = lambda **a: selective_scan(**a, backend="triton")
    compare_scan(fn, x, keys, sp, torch.float32, 2e-4)
    compare_scan(fn, x, keys, sp, torch.bfloat16, 3e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("fwd,T,bd", [("states", 64, 1), ("states", 256, 2), ("states", 512, 1), ("tiles", 64, 1)])
def test_triton_scan_long_chunks(fwd, T, bd, monkeypatch):
    """Launch settings of scan_tune's long grid (long chunks, both forward kernels, the 'states' backward) against the
    float64 reference: outputs, last state and every gradient, lengths off the chunk."""
    need_triton("selective_scan")
    import cab_bench.ops.triton_scan as ts
    for k, v in dict(SCAN_FWD=fwd, SCAN_T=T, SCAN_BD_MAX=bd, SCAN_BWD="states", SCAN_LONG_L=None).items():
        monkeypatch.setattr(ts, k, v)
    fn = lambda **a: selective_scan(**a, backend="triton")
    for seed, (bc, l) in enumerate((("shared", 1000), ("grouped", 777), ("const", 300))):
        x = random_scan_inputs(b=2, d=16, l=l, N=16, bc=bc, dtype=torch.float64, device=DEV, seed=seed)
        compare_scan(fn, x, ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"], True, torch.float32, 2e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("io", ["step", "staged"])
@pytest.mark.parametrize("T,bd,bd_bwd,warps", [(16, 32, 32, 1), (64, 128, 64, 4), (8, 16, 128, 2)])
def test_triton_scan_seq_kernels(T, bd, bd_bwd, warps, io, monkeypatch):
    """The 'seq' kernels (one step at a time; the settings `SCAN_WIDE` applies to many rows) at launch settings of
    scan_tune's grid, against the float64 reference: outputs, last state and every gradient, every option, the three
    B/C layouts, lengths off the chunk, float32 and bf16; per-token dB/dC both per block and by atomic adds; a step's
    values column by column and staged once a chunk (`SCAN_SEQ_IO`)."""
    need_triton("selective_scan")
    import cab_bench.ops.triton_scan as ts
    for k, v in dict(SCAN_FWD="seq", SCAN_BWD="seq", SCAN_T=T, SCAN_BD_MAX=bd, SCAN_BWD_BD_MAX=bd_bwd,
                     SCAN_WARPS=warps, SCAN_WARPS_BWD=warps, SCAN_LONG_L=None, SCAN_WIDE_ROWS=None, SCAN_SEQ_IO=io).items():
        monkeypatch.setattr(ts, k, v)
    fn = lambda **a: selective_scan(**a, backend="triton")
    keys = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    for seed, (bc, b, l) in enumerate((("shared", 4, 50), ("grouped", 2, 197), ("const", 3, 33), ("shared", 1, 1))):
        x = random_scan_inputs(b=b, d=256, l=l, N=16, bc=bc, dtype=torch.float64, device=DEV, seed=seed)
        compare_scan(fn, x, keys, True, torch.float32, 2e-4)
        compare_scan(fn, x, keys, True, torch.bfloat16, 3e-2)
    monkeypatch.setattr(ts, "SCAN_BC_PART_MAX", 0)
    x = random_scan_inputs(b=2, d=256, l=100, N=13, bc="shared", dtype=torch.float64, device=DEV, seed=9)
    compare_scan(fn, x, keys, True, torch.float32, 2e-4)


@pytest.mark.cuda
def test_triton_scan_wide_settings_apply():
    "Many rows below SCAN_LONG_L take SCAN_WIDE's settings (the 'seq' kernels); the Vim-Tiny shape matches the reference."
    need_triton("selective_scan")
    import cab_bench.ops.triton_scan as ts
    assert ts.launch_settings(197, 128 * 384)["SCAN_FWD"] == ts.SCAN_WIDE["SCAN_FWD"]
    x = random_scan_inputs(b=128, d=384, l=197, N=16, bc="shared", dtype=torch.float64, device=DEV, seed=5)
    compare_scan(lambda **a: selective_scan(**a, backend="triton"), x, ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"],
                 True, torch.float32, 2e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bc", ["const", "shared", "grouped"])
def test_triton_scan_matches_mamba_ssm(bc, dtype):
    "Against mamba-ssm's CUDA kernel at a Vim-like shape (L 197, not a multiple of the chunk), every option it has."
    need_triton("selective_scan"); need_kernel("selective_scan")
    x = random_scan_inputs(b=4, d=96, l=197, N=16, bc=bc, dtype=torch.float32, device=DEV, seed=3)
    keys = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    x = {k: v for k, v in x.items() if k in keys}
    # mamba-ssm's last state is not differentiable (its backward takes the output's gradient only): no loss on it
    res = {be: scan_case(lambda **a: selective_scan(**a, backend=be), x, keys, True, dtype, through_state=False)
           for be in ("triton", "cuda")}
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    (y, h, g), (y0, h0, g0) = res["triton"], res["cuda"]
    errs = {"y": rel(y, y0), "h": rel(h, h0), **{k: rel(g[k], g0[k]) for k in keys}}
    assert all(e < tol for e in errs.values()), errs


@pytest.mark.cuda
@pytest.mark.parametrize("seed", range(4))
def test_fla_ssd_matches_reference(seed):
    "fla's kernels with both backwards (fla's own only where safe), random shapes (lengths off the 64-step chunk)."
    need_triton("ssd_scan")
    rng = __import__("random").Random(seed)
    g = rng.choice([1, 2])
    shape = dict(b=rng.randint(1, 2), l=rng.choice([1, 63, 100, 300]), h=g * rng.choice([1, 3]), p=rng.choice([8, 64]),
                 g=g, n=rng.choice([16, 64]), seed=seed)
    x = random_ssd_inputs(dtype=torch.float64, device=DEV, **shape)
    opts = [o for o in ("D", "z", "dt_bias", "initial_states") if rng.random() < 0.7]
    keys = ["x", "dt", "A", "B", "C", *opts]
    lim = rng.choice([(0.0, math.inf), (0.02, 0.08)])

    def run(fn, dtype, **kw):
        a = {k: x[k].to(dtype).clone().requires_grad_() for k in keys}
        y, s = fn(**a, dt_softplus=True, dt_limit=lim, return_final_states=True, **kw)
        gen = torch.Generator(device=DEV).manual_seed(1)
        gy = torch.randn(y.shape, generator=gen, device=DEV, dtype=torch.float64)
        gs = torch.randn(s.shape, generator=gen, device=DEV, dtype=torch.float64)
        ((y.double() * gy).sum() + (s.double() * gs).sum()).backward()
        return {"y": y.detach(), "s": s.detach(), **{k: a[k].grad for k in keys}}

    ref = run(ssd_scan_ref, torch.float64)
    for bwd in ["fwd-kernels"] + ([] if fla_backward_unsafe() else ["fla"]):
        for dtype, tol in ((torch.float32, 5e-3), (torch.bfloat16, 5e-2)):
            got = run(ssd_scan_fla, dtype, backward=bwd)
            errs = {k: rel(got[k], ref[k]) for k in ref}
            assert all(e < tol for e in errs.values()), (bwd, dtype, errs)


@pytest.mark.cuda
@pytest.mark.parametrize("l", [2048, 8192])
def test_fla_replacement_backward_long_sequences(l):
    """The backward built from fla's forward kernel at language-model lengths, against the chunked SSD in float64:
    every gradient, fp32 and bf16 inputs, strong and weak decay (where long sequences hurt a reversed scan most)."""
    need_triton("ssd_scan")
    for A_scale, seed in ((1.0, 0), (0.05, 1)):                  # A as drawn (fast decay) and 20x smaller (slow)
        for dtype, tol in ((torch.float32, 5e-3), (torch.bfloat16, 5e-2)):
            errs = long_case_errors(l, A_scale, seed, dtype=dtype, device=DEV)
            # fla's float32 kernels multiply in tf32 (~1e-3 per gradient); A and dt_bias are sums over all L steps
            # whose terms cancel, which multiplies that by ~4 (H200 at L 8192: A 5.7e-3 against 1.4e-3 for x, B,
            # C); `test_fla_replacement_backward_exact_at_long_sequences` shows the backward itself is exact there
            bound = {k: 2 * tol if dtype == torch.float32 and k in ("A", "dt_bias") else tol for k in errs}
            bad = {k: e for k, e in errs.items() if not e < bound[k]}
            # a string, so that pytest prints every error (it shortens a dict), the failing ones first
            assert not bad, f"L {l}, A x {A_scale}, {dtype}: above {tol} (A, dt_bias in float32: {2 * tol}): {bad}; all: {errs}"


@pytest.mark.cuda
def test_fla_ssd_matches_mamba_ssm():
    "Against mamba-ssm's Triton SSD at a Mamba-2 shape (groups, D, z, dt_bias, softplus, states)."
    need_triton("ssd_scan"); need_kernel("ssd_scan")
    x = random_ssd_inputs(b=2, l=500, h=8, p=64, g=2, n=64, dtype=torch.float32, device=DEV, seed=4)
    res = {}
    for be in ("triton", "cuda"):
        a = {k: v.clone().requires_grad_() for k, v in x.items()}
        y, s = ssd_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], 64, D=a["D"], z=a["z"], dt_bias=a["dt_bias"],
                        initial_states=a["initial_states"], dt_softplus=True, return_final_states=True, backend=be)
        (y.square().sum() + s.sum()).backward()
        res[be] = {"y": y.detach(), "s": s.detach(), **{k: a[k].grad for k in x}}
    errs = {k: rel(res["triton"][k], res["cuda"][k]) for k in res["cuda"]}
    assert all(e < 5e-3 for e in errs.values()), errs


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["vim_test", "mamba_lm_test", "mamba2_lm_test"])
def test_students_triton_vs_chunked_bf16(name):
    """Vim (both directions), the Mamba-1 LM and the Mamba-2 LM through the dispatch, under bf16 autocast: the triton
    path is compared with the chunked path at the same precision, both against the chunked path in float32. Each
    parameter's gradient must be within 5% of float32's, or no further from it than twice the chunked bf16 path's own
    error: bf16 leaves a few parameters with tiny gradients (e.g. 1e-7 where others are 1e-2) where either path can be
    off by tens of percent, and the fast path must not be less accurate than the reference path, not more accurate than
    bf16 allows."""
    need_triton("selective_scan"); need_triton("ssd_scan")
    from cab_bench.models.students import create_student
    seed_everything(0)
    m = create_student(name).to(DEV)
    inp = torch.randn(4, 3, 16, 16, device=DEV) if name.startswith("vim") else torch.randint(0, 384, (4, 64), device=DEV)
    outs = {}
    for be, amp in (("triton", True), ("chunked", True), ("ref32", False)):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp), use_backend("chunked" if be == "ref32" else be):
            out = m(inp, return_bc=True)
            out.logits.float().square().mean().backward()
            outs[be] = (out.logits.float(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
            m.zero_grad(set_to_none=True)
    assert rel(outs["triton"][0], outs["chunked"][0]) < 2e-2
    assert rel(outs["triton"][0], outs["ref32"][0]) < 2e-2
    (_, gt), (_, gc), (_, g32) = outs["triton"], outs["chunked"], outs["ref32"]
    assert sorted(gt) == sorted(gc) == sorted(g32)
    errs = {n: (rel(gt[n], g32[n]), rel(gc[n], g32[n])) for n in g32}
    bad = {n: e for n, e in errs.items() if not (e[0] < 5e-2 or e[0] <= 2 * e[1])}
    assert not bad, f"(triton bf16, chunked bf16) relative errors against float32: {bad}"
