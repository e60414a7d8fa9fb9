"""MOHAWK's per-head transfer matrices through Triton (`ops.triton_matrix`) against the eager block factorisation and
the per-channel definition.

On a CPU: the kernels in Triton's interpreter (a subprocess: `TRITON_INTERPRET` must be set before Triton is imported),
reached through `models.mamba.scan_matrix`'s dispatch, and the dispatch's choice without the interpreter.
On a GPU (`cuda` marker): the real kernels on random shapes (several tiles, lengths that are not a multiple of one,
the replication grid's shape), float32 and bf16 inputs, every gradient.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cab_bench.models.mamba import head_scan_matrix, scan_matrix, selective_scan_matrix
from cab_bench.ops import backend_report, use_backend


def inputs(b, l, E, N, dev, seed=0, dtype=torch.float32):
    "Step sizes after softplus, negative A, random B and C: one direction's scan inputs of a Mamba-1 mixer."
    g = torch.Generator().manual_seed(seed)
    x = [torch.nn.functional.softplus(torch.randn(b, l, E, generator=g) - 1), -torch.rand(E, N, generator=g) * 4 - 0.1,
         torch.randn(b, l, N, generator=g), torch.randn(b, l, N, generator=g)]
    return [t.to(dev, dtype) for t in x]


def matrix_and_grads(fn, x, H, gy):
    a = [t.detach().clone().requires_grad_() for t in x]
    y = fn(*a, H)
    return [y.detach()] + list(torch.autograd.grad((y.double() * gy).sum(), a))


def per_channel_mean(dt, A, B, C, H):
    "The definition: Mamba-1's per-channel matrices, averaged per head."
    return selective_scan_matrix(dt, A, B, C, heads=H)


def rel(u, v):
    return ((u.double() - v.double()).norm() / v.double().norm()).item()


INTERP = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_head_matrix import inputs, matrix_and_grads, rel, per_channel_mean
    from cab_bench.models.mamba import scan_matrix, selective_scan_matrix
    from cab_bench.ops.triton_matrix import head_matrix_path
    assert head_matrix_path("cpu")[0] == "triton", head_matrix_path("cpu")
    assert head_matrix_path("cpu", dtype=torch.float64)[0] == "blocks"          # the kernels compute in float32
    from cab_bench.models.mamba import Mamba1Mixer
    from cab_bench.distill.mohawk import _light_matrices
    assert _light_matrices(Mamba1Mixer(16, bidirectional=True), torch.device("cpu"))   # MOHAWK skips its recompute
    assert not _light_matrices(Mamba1Mixer(16).double(), torch.device("cpu"))          # float64: blocks, recomputed
    for b, l, E, N, H in [(2, 37, 12, 5, 3), (1, 70, 4, 3, 2)]:
        x = inputs(b, l, E, N, "cpu")
        gy = torch.randn(b, H, l, l, dtype=torch.float64)
        got = matrix_and_grads(scan_matrix, x, H, gy)                      # the dispatch takes the interpreted kernels
        ref = matrix_and_grads(per_channel_mean, [t.double() for t in x], H, gy)
        errs = [rel(u, v) for u, v in zip(got, ref)]
        assert max(errs) < 1e-4, (b, l, E, N, H, errs)
    print("ok")
''')


def _old_interpreter()->bool:
    "Triton before 3.8: its interpreter hands a kernel's int arguments over as 1-element arrays, which `range()` refuses (seen on 3.6)."
    try: import triton
    except ImportError: return False
    return tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 8)


@pytest.mark.skipif(_old_interpreter(), reason="Triton's interpreter before 3.8 cannot run loops over int arguments")
def test_head_matrix_interpreted_through_dispatch():
    "Under the interpreter `scan_matrix` takes the Triton kernels; matrix and every gradient match the float64 definition (3 tiles of 32 at l 70)."
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", INTERP.format(tests=os.path.dirname(__file__))], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_head_matrix_cpu_dispatch_keeps_blocks():
    "Without CUDA (and no interpreter) the eager block path runs, and backend_report says so and why."
    if os.environ.get("TRITON_INTERPRET") == "1": pytest.skip("the interpreter is on in this process")
    rep = backend_report("cpu")["head_scan_matrix"]
    assert rep["path"] == "blocks" and rep["reason"]
    x = inputs(2, 9, 6, 4, "cpu")
    torch.testing.assert_close(scan_matrix(*x, 3), head_scan_matrix(*x, 3))
    with use_backend("chunked"): assert backend_report("cpu")["head_scan_matrix"]["reason"].startswith("backend 'chunked'")
    from cab_bench.models.mamba import Mamba1Mixer
    from cab_bench.distill.mohawk import _light_matrices
    assert not _light_matrices(Mamba1Mixer(16), torch.device("cpu"))      # the eager blocks: MOHAWK checkpoints each layer


@pytest.mark.cuda
@pytest.mark.parametrize("b,l,E,N,H", [(4, 50, 384, 16, 3), (2, 130, 64, 16, 4), (3, 17, 24, 5, 1), (1, 1, 8, 4, 2), (2, 64, 32, 8, 2)])
def test_head_matrix_cuda_matches_definition(b, l, E, N, H):
    "The GPU kernels against the float64 per-channel mean: the matrix and the gradients of dt, A, B, C."
    x = inputs(b, l, E, N, "cuda")
    assert backend_report("cuda")["head_scan_matrix"]["path"] == "triton"
    gy = torch.randn(b, H, l, l, device="cuda", dtype=torch.float64)
    got = matrix_and_grads(scan_matrix, x, H, gy)
    ref = matrix_and_grads(per_channel_mean, [t.double() for t in x], H, gy)
    errs = [rel(u, v) for u, v in zip(got, ref)]
    assert max(errs) < 1e-4, errs
    with use_backend("chunked"):                                    # the eager blocks: the same function
        blocks = matrix_and_grads(scan_matrix, x, H, gy)
    assert max(rel(u, v) for u, v in zip(blocks, ref)) < 1e-4


@pytest.mark.cuda
def test_head_matrix_cuda_bf16_inputs():
    "bf16 inputs are upcast: the result is the float32 one of the upcast values; gradients come back in bf16."
    x = inputs(3, 50, 96, 16, "cuda", dtype=torch.bfloat16)
    gy = torch.randn(3, 3, 50, 50, device="cuda", dtype=torch.float64)
    got = matrix_and_grads(scan_matrix, x, 3, gy)
    ref = matrix_and_grads(head_scan_matrix, [t.float() for t in x], 3, gy)
    assert got[0].dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in got[1:])
    assert rel(got[0], ref[0]) < 1e-5
    assert max(rel(u.float(), v.to(torch.bfloat16).float()) for u, v in zip(got[1:], ref[1:])) < 2e-2


@pytest.mark.cuda
def test_mohawk_orientation_same_on_both_matrix_paths():
    "One bidirectional Vim block's orientation loss and its parameter gradients: Triton kernels (no recompute) vs eager blocks."
    from cab_bench.models.mamba import Block, Mamba1Mixer
    from cab_bench.distill.mohawk import _orientation, _light_matrices
    torch.manual_seed(0)
    blk = Block(Mamba1Mixer(96, bidirectional=True), 96).cuda()
    h, A = torch.randn(4, 50, 96, device="cuda"), torch.softmax(torch.randn(4, 3, 50, 50, device="cuda"), -1).tril()
    def run():
        blk.zero_grad()
        loss = _orientation(blk, h, A)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in blk.parameters() if p.grad is not None]
    assert _light_matrices(blk.mixer, h.device)
    l1, g1 = run()
    with use_backend("chunked"):
        assert not _light_matrices(blk.mixer, h.device)
        l0, g0 = run()
    assert rel(l1, l0) < 1e-5 and max(rel(u, v) for u, v in zip(g1, g0)) < 1e-3
