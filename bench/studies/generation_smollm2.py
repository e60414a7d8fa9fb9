"""Generation speed and memory of a Mamba-2 student against its SmolLM2-135M teacher, after 2K- and 16K-token prompts.

The replication's language pair (`default:smollm2` -> `mamba2_smollm2`): the student generates from its recurrent
state (`MambaLM.generate`: the scan over the prompt, then one recurrent step per token, replayed from a CUDA graph on
a GPU), the teacher with transformers' `generate` and its default dynamic KV cache; greedy, bf16 autocast, the same
random prompts for both. Speed and memory do not depend on the weights, so the student is the grid's architecture at
its initialisation unless `--student_run` names a finished run kept with its checkpoints, whose teacher and
trained student are loaded. Timing is `bench.bench_gen.point`: prefill + 1 token, then n = 256 tokens; decode
tokens/s = batch * (n - 1) / (t_n - t_1); the allocator's peak during the n-token call; and the state each model
carries (teacher: bf16 K and V of every layer over prompt + n tokens, 3 KV heads x 64; student: conv and SSM states).

SmolLM2-135M was trained with 8,192 positions: at 16K its RoPE runs beyond them. Its speed and memory there are
what a user would see; its outputs there are not meaningful, which this study does not measure.

    python -m bench.studies.generation_smollm2 --out bench/results/generation_smollm2_h200.json [--student_run DIR]
    python -m bench.studies.generation_smollm2 --smoke --out gen_cpu.json    # tiny random pair: the code path only
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.bench_gen import point, state_bytes
from bench.benchlib import Guard, MB, device, environment, free_memory, write_json

PROMPTS, BATCHES, NEW = (2048, 16384), (1, 16), 256


def _models(smoke:bool, student_run, dev):
    from cab_bench.models import create_student, load_teacher
    if smoke:                  # a tiny Llama teacher written to disk and loaded back: the same loading path, no assets
        import tempfile, transformers
        cfg = transformers.LlamaConfig(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        d = Path(tempfile.mkdtemp()) / "tiny_llama"
        transformers.LlamaForCausalLM(cfg).save_pretrained(d)
        teacher = load_teacher(f"hf:{d}", device=dev)
        student = create_student("mamba2_lm_test", vocab_size=384).to(dev)
        return teacher, student, "tiny Llama (2 layers) -> mamba2_lm_test"
    if student_run:            # a finished run kept with its checkpoints (`replication run --keep_ckpts`)
        from cab_bench.analysis import load_run
        run = load_run(student_run, device=str(dev))
        return run.teacher, run.student, f"{run.config.teacher} -> {run.config.student} trained in {run.name}"
    teacher = load_teacher("default:smollm2", device=dev)
    student = create_student("mamba2_smollm2").to(dev)
    what = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised) -> mamba2_smollm2 at initialisation"
    return teacher, student.eval(), what


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--student_run", default=None, help="a finished run folder whose student weights to load")
    ap.add_argument("--smoke", action="store_true", help="tiny random pair on any device: checks the script")
    a = ap.parse_args(argv)
    import transformers
    transformers.logging.set_verbosity_error()
    dev = device()
    prompts, batches, n = ((64, 256), (1, 2), 8) if a.smoke else (PROMPTS, BATCHES, NEW)
    t0 = time.time()
    teacher, student, what = _models(a.smoke, a.student_run, dev)
    vocab = teacher.model.config.vocab_size
    pad = teacher.model.config.pad_token_id or 0
    res = dict(study="generation_smollm2", environment=environment(), pair=what, decoding="greedy",
               precision="bf16 autocast" if dev.type == "cuda" else "fp32", new_tokens=n, load_s=time.time() - t0,
               params=dict(teacher=sum(p.numel() for p in teacher.parameters()),
                           student=sum(p.numel() for p in student.parameters())), rows=[], skipped=[])
    guard = Guard(strict=False)
    for L in prompts:
        for b in batches:
            ids = torch.randint(3, vocab, (b, L), generator=torch.Generator().manual_seed(L + b)).to(dev)
            for kind, model in (("student", student), ("teacher", teacher)):
                r, why = guard(lambda: point(kind, model, ids, n, dev, pad, allow_second=lambda t: t <= 2.5))
                where = dict(model=kind, prompt=L, batch=b)
                if r is None:
                    res["skipped"].append(dict(where, why=why)); print(f"{kind} prompt={L} b={b}: {why}", flush=True)
                    free_memory(); continue
                sb = state_bytes(kind, model, b, L + n)
                res["rows"].append(dict(where, new_tokens=n, state_mb=sb / MB, **r))
                print(f"{kind:7s} prompt={L:<6d} b={b:<3d} prefill {r['prefill_ms']:8.1f} ms  decode "
                      f"{r['decode_tokens_per_s']:9.1f} tok/s  peak {r['peak_gb'] or 0:.2f} GB  state {sb / MB:.1f} MB", flush=True)
                write_json(a.out, res)                         # after each point: a cut-off run keeps it
            del ids; free_memory()
    ratio = {}
    for L in prompts:
        for b in batches:
            s = next((r for r in res["rows"] if (r["model"], r["prompt"], r["batch"]) == ("student", L, b)), None)
            t = next((r for r in res["rows"] if (r["model"], r["prompt"], r["batch"]) == ("teacher", L, b)), None)
            if s and t:
                ratio[f"prompt{L}_b{b}"] = dict(decode_speedup=s["decode_tokens_per_s"] / t["decode_tokens_per_s"],
                                                prefill_ratio=s["prefill_ms"] / t["prefill_ms"],
                                                peak_ratio=None if not t["peak_gb"] else s["peak_gb"] / t["peak_gb"],
                                                state_ratio=s["state_mb"] / t["state_mb"])
    res["student_vs_teacher"] = ratio
    res["seconds"] = time.time() - t0
    write_json(a.out, res)
    for k, v in ratio.items(): print(k, {kk: round(vv, 3) if vv is not None else None for kk, vv in v.items()})


if __name__ == "__main__":
    main()
