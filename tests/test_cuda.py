"""GPU checks: cab_bench's chunked PyTorch paths against the mamba-ssm kernels at realistic shapes.

Run on a machine with a CUDA device (and mamba-ssm built for it): `pytest -m cuda tests/test_cuda.py`.
Tests that need the kernels skip with the import error when mamba-ssm is not usable.
"""
import pytest
import torch

from cab_bench.core import seed_everything
from cab_bench.ops import (kernel, backend_report, selective_scan, selective_scan_step, ssd_scan, ssd_step,
                           random_scan_inputs, random_ssd_inputs, use_backend)
from cab_bench.ops.selective_scan import selective_scan_ref, selective_scan_chunked, default_form
from cab_bench.models.students import create_student

pytestmark = pytest.mark.cuda
DEV = "cuda"


def need(op):
    fn, why = kernel(op)
    if fn is None:
        pytest.skip(why)


def rel(a, b):
    "Relative error in norm: robust for tensors summed over many elements (gradients of A, B, C)."
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def grads(fn, inputs, names):
    x = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = fn(x)
    out.float().square().sum().backward()
    return out.detach(), {k: x[k].grad for k in names}


# Vim-Tiny's scan: batch 128, d_inner 384, L 197 (196 patches + class token), N 16
VIM = dict(b=128, d=384, l=197, N=16)
# Mamba-2 at 2K context: batch 8, 24 heads of 64, N 128, one group
SSD = dict(b=8, l=2048, h=24, p=64, g=1, n=128)


def test_report_names_cuda_paths():
    need("selective_scan")
    r = backend_report("cuda")
    assert r["selective_scan"]["path"] == "cuda" and r["ssd_scan"]["path"] in ("cuda", "triton")   # triton: fla-core


@pytest.mark.parametrize("form", ["cumsum", "scan"])
@pytest.mark.parametrize("bc", ["const", "shared", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_matches_reference_on_gpu(dtype, bc, form):
    "Both chunked forms (compiled on the GPU) against the sequential reference: outputs, last state, every gradient."
    seed_everything(0)
    x = random_scan_inputs(b=2, d=16, l=50, N=8, bc=bc, dtype=dtype, device=DEV)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]

    def call(fn, **kw):
        def f(a):
            y, h = fn(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"], True, True,
                      initial_state=a["initial_state"], **kw)
            return torch.cat([y.flatten(), h.flatten()])
        return f
    yr, gr = grads(call(selective_scan_ref), x, names)
    for T in (None, 7):                                       # one chunk; chunks that do not divide L (padding)
        yc, gc = grads(call(selective_scan_chunked, form=form, chunk_size=T), x, names)
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        assert rel(yc, yr) < tol
        for k in names:
            assert rel(gc[k], gr[k]) < tol * 10, (k, T)


def test_scan_form_is_default_on_gpu():
    assert default_form(torch.device(DEV)) == "scan"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_scan_chunked_matches_kernel(dtype):
    need("selective_scan")
    seed_everything(0)
    x = random_scan_inputs(**VIM, bc="shared", dtype=torch.float32, device=DEV, seed=1)
    x = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    call = lambda be: lambda a: selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
                                                a["delta_bias"], True, backend=be)
    yk, gk = grads(call("cuda"), x, names)
    yc, gc = grads(call("chunked"), x, names)
    assert yc.dtype == yk.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel(yc, yk) < tol
    for k in names:
        assert rel(gc[k], gk[k]) < tol * 10, (k, rel(gc[k], gk[k]))


def test_selective_scan_last_state_and_step_match_kernel():
    need("selective_scan"); need("selective_state_update")
    seed_everything(0)
    x = random_scan_inputs(b=4, d=64, l=33, N=16, bc="shared", dtype=torch.float32, device=DEV)
    a = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True)
    yk, hk = selective_scan(*a, backend="cuda")
    yc, hc = selective_scan(*a, backend="chunked")
    assert rel(yc, yk) < 1e-5 and rel(hc, hk) < 1e-5
    t = 5
    s = torch.randn(4, 64, 16, device=DEV)
    args = (s, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t], x["D"], x["z"][..., t],
            x["delta_bias"], True)
    (yk1, sk), (yc1, sc) = selective_scan_step(*args, backend="cuda"), selective_scan_step(*args, backend="chunked")
    assert rel(yc1, yk1) < 1e-5 and rel(sc, sk) < 1e-5


def closer_to_fp64(ours, kernel, exact, floor):
    "Ours is at least as close to the fp64 result as the kernel (mamba-ssm's SSD uses TF32 dot products)."
    eo, ek = rel(ours, exact), rel(kernel, exact)
    assert eo <= max(1.5 * ek, floor), (eo, ek)
    return eo, ek


@pytest.mark.parametrize("with_z", [False, True])
def test_ssd_chunked_matches_kernel(with_z):
    need("ssd_scan")
    seed_everything(0)
    x = random_ssd_inputs(**SSD, dtype=torch.float32, device=DEV, seed=2)
    names = ["x", "dt", "A", "B", "C", "D", "dt_bias"] + (["z"] if with_z else [])
    call = lambda be: lambda a: ssd_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, D=a["D"],
                                         z=a["z"] if with_z else None, dt_bias=a["dt_bias"], dt_softplus=True, backend=be)
    yk, gk = grads(call("cuda"), x, names)
    yc, gc = grads(call("chunked"), x, names)
    y64, g64 = grads(call("chunked"), {k: v.double() for k, v in x.items()}, names)
    assert rel(yk, y64) < 5e-3                       # the kernel agrees to TF32 precision
    closer_to_fp64(yc, yk, y64, 1e-5)
    for k in names:
        assert rel(gk[k], g64[k]) < 2e-2, k
        closer_to_fp64(gc[k], gk[k], g64[k], 1e-4)


def test_ssd_final_states_and_step_match_kernel():
    need("ssd_scan"); need("selective_state_update")
    seed_everything(0)
    x = random_ssd_inputs(b=2, l=100, h=8, p=16, g=2, n=32, dtype=torch.float32, device=DEV)
    a = lambda x: (x["x"], x["dt"], x["A"], x["B"], x["C"], 32)
    kw = lambda x: dict(D=x["D"], dt_bias=x["dt_bias"], initial_states=x["initial_states"], dt_softplus=True,
                        return_final_states=True)
    (yk, sk), (yc, sc) = ssd_scan(*a(x), **kw(x), backend="cuda"), ssd_scan(*a(x), **kw(x), backend="chunked")
    x64 = {k: v.double() for k, v in x.items()}
    y64, s64 = ssd_scan(*a(x64), **kw(x64), backend="chunked")
    assert rel(yk, y64) < 5e-3 and rel(sk, s64) < 5e-3
    closer_to_fp64(yc, yk, y64, 1e-5); closer_to_fp64(sc, sk, s64, 1e-5)
    args = (x["initial_states"], x["x"][:, 0], x["dt"][:, 0], x["A"], x["B"][:, 0], x["C"][:, 0], x["D"], None,
            x["dt_bias"], True)
    (yk1, sk1), (yc1, sc1) = ssd_step(*args, backend="cuda"), ssd_step(*args, backend="chunked")
    assert rel(yc1, yk1) < 1e-5 and rel(sc1, sk1) < 1e-5


@pytest.mark.parametrize("name", ["vim_test", "mamba_lm_test", "mamba2_lm_test"])
def test_students_kernels_vs_chunked_bf16(name):
    need("selective_scan"); need("ssd_scan")
    seed_everything(0)
    m = create_student(name).to(DEV)
    inp = torch.randn(4, 3, 16, 16, device=DEV) if name.startswith("vim") else torch.randint(0, 384, (4, 64), device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outs = {}
        for be in ("auto", "chunked"):   # auto: the scan kernels (the conv has no kernel unless causal-conv1d is built)
            with use_backend(be):
                out = m(inp, return_bc=True)
                out.logits.float().square().mean().backward()
                outs[be] = (out.logits.float(), [p.grad.clone() for p in m.parameters() if p.grad is not None])
                m.zero_grad(set_to_none=True)
    assert rel(outs["chunked"][0], outs["auto"][0]) < 2e-2
    for gc, gk in zip(outs["chunked"][1], outs["auto"][1]):
        assert rel(gc, gk) < 5e-2


def test_generate_on_gpu_matches_forward():
    seed_everything(0)
    lm = create_student("mamba2_lm_test").to(DEV)
    prompt = torch.randint(0, 384, (2, 17), device=DEV)
    ids, logits = lm.generate(prompt, max_new_tokens=8, return_logits=True)
    full = lm(ids).logits
    assert rel(logits, full[:, 16:24]) < 1e-4


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("name", ["mamba_lm_test", "mamba2_lm_test"])
def test_generate_cuda_graph_matches_eager(name, amp):
    "Decoding replayed from a CUDA graph gives the eager loop's tokens and logits, in fp32 and under bf16 autocast."
    seed_everything(0)
    lm = create_student(name).to(DEV).eval()
    prompt = torch.randint(0, 384, (3, 7), device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        ids_e, lg_e = lm.generate(prompt, max_new_tokens=20, return_logits=True, cuda_graph=False)
        ids_g, lg_g = lm.generate(prompt, max_new_tokens=20, return_logits=True, cuda_graph=True)
    assert torch.equal(ids_e, ids_g)
    assert rel(lg_g, lg_e) < (1e-5 if not amp else 1e-2)


@pytest.mark.parametrize("ckpt", [False, True])
def test_cab_align_stacked_bf16_matches_per_layer(ckpt):
    "CAB's stacked alignment (plain and checkpointed) under bf16 autocast vs the per-layer definition, at Vim-Tiny's shapes."
    from cab_bench.distill.cab import Bridge, cab_align_loss, cab_align_loss_ref
    seed_everything(0)
    L, T, b, l, N, D = 24, 12, 32, 197, 16, 192
    br = Bridge(L, N, D, D, hidden=128, bidirectional=True).to(DEV)
    bc = [{n: torch.randn(b, l, N, device=DEV, dtype=torch.bfloat16, requires_grad=True) for n in br.names()} for _ in range(L)]
    q = [torch.randn(b, l, D, device=DEV, dtype=torch.bfloat16) for _ in range(T)]
    k = [torch.randn(b, l, D, device=DEV, dtype=torch.bfloat16) for _ in range(T)]
    out = {}
    for how, fn in (("stacked", lambda: cab_align_loss(br, bc, q, k, checkpoint=ckpt)), ("per_layer", lambda: cab_align_loss_ref(br, bc, q, k))):
        br.zero_grad(); [t.grad.zero_() for d in bc for t in d.values() if t.grad is not None]
        with torch.autocast("cuda", dtype=torch.bfloat16): loss = fn()
        loss.backward()
        out[how] = (loss.detach(), [p.grad.clone() for p in br.parameters()] + [t.grad.clone() for d in bc for t in d.values()])
    assert rel(out["stacked"][0], out["per_layer"][0]) < 1e-2
    worst = max(rel(a, b_) for a, b_ in zip(out["stacked"][1], out["per_layer"][1]))
    assert worst < 3e-2, worst


@pytest.mark.parametrize("heads", [None, 3])
def test_scan_matrix_cuda_matches_reference(heads):
    """Mamba-1's transfer matrices (MOHAWK's orientation, the attention analysis) as `scan_matrix` computes them on
    CUDA (per channel: compiled; with `heads`: the eager block factorisation, which never forms the per-channel
    matrices) against the eager per-channel sum (with `heads`, its mean per head): values and the gradients of dt, A,
    B, C, at the replication grid's vim_fashion shape (b 128 would be 0.5 GB a direction eager; 16 here)."""
    from cab_bench.models.mamba import scan_matrix, selective_scan_matrix
    from cab_bench.ops import use_ops
    g = torch.Generator(device="cpu").manual_seed(0)
    b, l, E, N = 16, 50, 384, 16
    x = dict(dt=torch.rand(b, l, E, generator=g) * 0.2 + 0.01, A=-torch.rand(E, N, generator=g) * 8 - 0.5,
             B=torch.randn(b, l, N, generator=g), C=torch.randn(b, l, N, generator=g))
    x = {k: v.to(DEV) for k, v in x.items()}
    with use_ops(torch_compile=True):
        y, gy = grads(lambda a: scan_matrix(a["dt"], a["A"], a["B"], a["C"], heads), x, list(x))
    y0, g0 = grads(lambda a: selective_scan_matrix(a["dt"], a["A"], a["B"], a["C"], heads), x, list(x))
    assert rel(y, y0) < 1e-5, rel(y, y0)
    errs = {k: rel(gy[k], g0[k]) for k in x}
    assert all(e < 1e-4 for e in errs.values()), errs
