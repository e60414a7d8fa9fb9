"""Which SSD path the replication's language cells should take: one optimizer step of LMAIN's stages at the grid's
shape (32 x 512 tokens), with `ssd_scan` on the chunked PyTorch path and on the build-free Triton path (fla-core's
forward; where fla's own backward is unsafe, the backward built from its forward kernel), on one GPU.

The teacher is a randomly initialised Llama of SmolLM2-135M's shape (30 layers, width 576, 9 query / 3 KV heads,
MLP 1536, vocabulary 49,152, tied embeddings): a step's time and memory do not depend on the weights, and no GGUF has
to reach the machine. The student is the grid's `mamba2_smollm2`; each stage is built with the grid's own method
options (`bench.studies.replication.LANGUAGE_METHODS`). Per stage and path: ms per step (after warm-up; the first
steps compile and autotune), the allocator's peak, and the first step's loss, whose relative difference between the
two paths (same weights, same batch) says they compute the same function. With `--profile`, each point also gets
torch.profiler's table of two more steps (`benchlib.profile_top`: kernels and operators by device time), to say
where one path's extra time goes.

    python -m bench.studies.lm_step_backend --out bench/results/lm_step_backend_h200.json
    python -m bench.studies.lm_step_backend --stages soft_kd/kd --steps 4 --warm 3 --profile --out lm_profile.json
    python -m bench.studies.lm_step_backend --smoke --out lm_step_cpu.json     # a tiny pair on any device: the code path
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.bench_step import StageStep
from bench.benchlib import environment, profile_top, sync, write_json
from cab_bench.distill import build_method
from cab_bench.models import create_student
from cab_bench.models.teachers import Teacher
from cab_bench.ops import backend_report, use_backend

SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                     rms_norm_eps=1e-5, tie_word_embeddings=True)
TINY_SHAPE = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)
STAGES = ("soft_kd/kd", "cab/align", "cab/kd", "hedgemamba/mamba")     # label/stage of LANGUAGE_METHODS


def llama_teacher(shape:dict, dev, seed:int=0)->Teacher:
    "A randomly initialised Llama of `shape` (transformers' own model, SDPA attention), wrapped as a cab_bench teacher."
    from transformers import AutoModelForCausalLM, LlamaConfig
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=torch.float32)
    return Teacher(model, f"bench:llama random init {shape}", "language", "llama").to(dev)


def time_step(step:StageStep, batch, dev, n:int, warm:int)->tuple[float, float]:
    """(ms per trainer step over `n` steps after `warm` untimed ones, the stage's weighted loss before any update: at the
    same weights and batch for every path, so the paths' losses can be compared)."""
    with torch.no_grad(): first = float(step.forward(batch))
    for _ in range(warm): step(batch)
    sync(dev); t = time.perf_counter()
    for _ in range(n): step(batch)
    sync(dev)
    return (time.perf_counter() - t) / n * 1e3, first


def main(argv=None)->dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq_len", type=int, default=512)
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated label/stage pairs (of {', '.join(STAGES)})")
    ap.add_argument("--backends", default="chunked,triton", help="comma-separated backends for the scans (the other ops: chunked)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per stage and path")
    ap.add_argument("--warm", type=int, default=4, help="untimed steps first (compile, autotune)")
    ap.add_argument("--smoke", action="store_true", help="tiny teacher and student: checks the script on any device")
    ap.add_argument("--profile", action="store_true", help="also profile 2 steps per point (kernels and operators by device time)")
    ap.add_argument("--top", type=int, default=30, help="rows of each profile table")
    a = ap.parse_args(argv)
    from bench.studies.replication import LANGUAGE_METHODS
    stages = [s.split("/") for s in a.stages.split(",")]
    bad = [s for s in stages if len(s) != 2 or s[0] not in LANGUAGE_METHODS]
    if bad: raise SystemExit(f"--stages: {['/'.join(s) for s in bad]} are not label/stage pairs of {sorted(LANGUAGE_METHODS)}")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = TINY_SHAPE if a.smoke else SMOLLM2_SHAPE
    student_name, student_kw = ("mamba2_lm_test", dict(mixer_kwargs=dict(headdim=32))) if a.smoke else ("mamba2_smollm2", {})
    b, l = (2, 32) if a.smoke else (a.batch, a.seq_len)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, shape["vocab_size"], (b, l + 1), generator=g)
    batch = (ids[:, :-1].contiguous().to(dev), ids[:, 1:].contiguous().to(dev))
    res = dict(study="lm_step_backend", env=environment(), batch=b, seq_len=l, teacher=shape, student=student_name,
               smoke=a.smoke, points={})
    teacher = llama_teacher(shape, dev)
    for label, stage in stages:
        method, opts = LANGUAGE_METHODS[label]
        for be in a.backends.split(","):
            key = f"{label}/{stage}/{be}"
            with use_backend(be):
                torch.manual_seed(1)
                student = create_student(student_name, vocab_size=shape["vocab_size"], **student_kw)
                meth = build_method(method, teacher, student, **opts)
                step = StageStep(meth, stage, dev)
                if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
                try:
                    ms, loss = time_step(step, batch, dev, n=2 if a.smoke else a.steps, warm=1 if a.smoke else a.warm)
                    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
                    res["points"][key] = dict(ms=round(ms, 2), tokens_per_s=round(b * l / ms * 1e3), peak_gib=peak and round(peak, 2),
                                              first_loss=loss, ssd_path=backend_report(dev)["ssd_scan"])
                    print(f"{key}: {ms:.1f} ms/step, {b * l / ms * 1e3:,.0f} tokens/s, peak {f'{peak:.1f} GiB' if peak else '-'}, "
                          f"first loss {loss:.5f}", flush=True)
                    if a.profile:
                        prof = res["points"][key]["profile"] = profile_top(lambda: step(batch), dev, steps=2, top=a.top)
                        head = ", ".join(f"{r['name'][:50]} {r['device_ms']:.1f}" for r in prof["kernels"][:5])
                        print(f"{key}: profiled kernel time {prof['kernel_ms']:.1f} ms/step; top kernels (ms): {head}", flush=True)
                except Exception as e:                     # one path failing (an OOM, a refused kernel) is recorded
                    res["points"][key] = dict(error=f"{type(e).__name__}: {e}")
                    print(f"{key}: {type(e).__name__}: {e}", flush=True)
                step.release(); del meth, student, step
                if dev.type == "cuda": torch.cuda.empty_cache()
            write_json(a.out, res)                         # after each point: a run cut off keeps what it timed
        pts = {be: res["points"].get(f"{label}/{stage}/{be}", {}) for be in a.backends.split(",")}
        losses = [p["first_loss"] for p in pts.values() if "first_loss" in p]
        if len(losses) == 2:
            res["points"][f"{label}/{stage}/loss_rel_diff"] = abs(losses[0] - losses[1]) / max(abs(losses[0]), 1e-12)
        write_json(a.out, res)
    return res


if __name__ == "__main__":
    main()
