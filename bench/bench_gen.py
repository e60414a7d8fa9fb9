"""Generation: the Mamba-2 student (recurrent state) against its GPT-2 teacher (KV cache), greedy, after long prompts.

The student generates with `MambaLM.generate` (prefill with the scan, then one recurrent `step` per token, replayed
from a CUDA graph: the library's default on a GPU; the capture is inside the timed call); the
teacher with transformers' `generate` (greedy, `min_new_tokens = max_new_tokens`, its default dynamic KV cache).
Both run under bf16 autocast on a GPU, with random weights (speed does not depend on them) and random prompts.

Per (prompt length, batch, model): `t_1` = time of `generate(max_new_tokens=1)` (prefill plus one token; median of
2), `t_n` = time of generating n = 256 tokens (median of 1-2). Reported: end-to-end tokens/s = batch * n / t_n,
decode tokens/s = batch * (n - 1) / (t_n - t_1), the allocator's peak during the n-token call, and the size of the
state each model carries (teacher: K and V of every layer over prompt + n tokens; student: conv and SSM states).
"""
from __future__ import annotations

import statistics

import torch

from .benchlib import Deadline, Guard, SectionLog, GB, MB, autocast, device, estimate, free_memory, log, time_once
from .cases import lm_pair, lm_student, lm_teacher, n_params

MODELS = ("student", "teacher")


def settings(smoke:bool)->dict:
    if smoke: return dict(prompts=[64, 32, 128], batches=[1, 2], new_tokens=8, ref_prompt=64, second_run_max_s=1.0)
    # 16K first: the target point; then the rest of the 1K-32K range
    return dict(prompts=[16384, 1024, 4096, 32768, 2048, 8192], batches=[1, 16], new_tokens=256, ref_prompt=16384,
                second_run_max_s=2.5)


def state_bytes(kind:str, model, b:int, total_len:int)->int:
    """Bytes of what generation carries per step: the teacher's bf16 K/V cache (its key-value heads: all heads for
    GPT-2, fewer for grouped-query Llamas), or the student's conv + SSM states."""
    if kind == "teacher":
        c = model.model.config
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * c.num_hidden_layers * b * total_len * kv_heads * head_dim * 2
    return sum(t.numel() * t.element_size() for layer in model.layers
               for t in layer.mixer.empty_cache(b, device="meta", dtype=torch.bfloat16).values())


def prompt_ids(pair, b:int, L:int, dev)->torch.Tensor:
    "Random prompts (b, L), the same for both models."
    return torch.randint(3, pair.teacher["vocab_size"], (b, L), generator=torch.Generator().manual_seed(L + b)).to(dev)


def generator(kind:str, model, ids, dev, pad_id:int):
    "A call generating `n` tokens greedily after `ids`; returns the ids (prompt + new)."
    def gen(n):
        with autocast(dev):
            if kind == "student": return model.generate(ids, max_new_tokens=n)
            return model.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                        do_sample=False, pad_token_id=pad_id, use_cache=True)
    return gen


def point(kind, model, ids, n:int, dev, pad_id:int, allow_second)->dict:
    gen = generator(kind, model, ids, dev, pad_id)
    out = gen(2)                                                   # warm-up: prefill and decoding kernels at this shape
    assert out.shape[1] == ids.shape[1] + 2, f"{kind} generated {out.shape[1] - ids.shape[1]} tokens, not 2"
    del out
    t1 = statistics.median([time_once(lambda: gen(1), dev) for _ in range(2)])
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev); base = torch.cuda.memory_allocated(dev)
    res = {}
    def full(): res["out"] = gen(n)
    tn = [time_once(full, dev)]
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    assert res["out"].shape[1] == ids.shape[1] + n, f"{kind} generated {res['out'].shape[1] - ids.shape[1]} tokens, not {n}"
    del res["out"]
    if allow_second(tn[0] / 1e3): tn.append(time_once(full, dev)); del res["out"]
    t = statistics.median(tn)
    b = ids.shape[0]
    return dict(prefill_ms=t1, total_ms=t, reps=len(tn), decode_ms_per_token=(t - t1) / (n - 1),
                tokens_per_s=b * n / (t / 1e3), decode_tokens_per_s=b * (n - 1) / ((t - t1) / 1e3),
                peak_gb=None if peak is None else peak / GB, static_gb=None if peak is None else base / GB)


def run(out_path, env:dict, smoke:bool, cap_s:float, strict:bool=False)->dict:
    "Every prompt length x batch x model, key point first, until OOM (per model and batch) or the time cap."
    import transformers
    transformers.logging.set_verbosity_error()
    dev = device()
    st = settings(smoke)
    pair = lm_pair(smoke, max_len=max(st["prompts"]) + st["new_tokens"] + 64)
    sec = SectionLog(out_path, "gen", env, dict(st, pair=pair.to_dict(), decoding="greedy", precision="bf16 autocast" if dev.type == "cuda" else "fp32",
                     teacher_cache="transformers DynamicCache (generate's default)", student="MambaLM.generate (recurrent state)"),
                     smoke, cap_s)
    deadline, guard = Deadline(cap_s), Guard(strict)
    models = dict(student=lm_student(pair, dev).eval(), teacher=lm_teacher(pair, dev))
    sec.set(params={k: n_params(m) for k, m in models.items()})
    pad = pair.teacher.get("pad_token_id", 0) or 0
    n = st["new_tokens"]
    oom_at, seen, capped = {}, {}, False   # seen: (model, batch) -> {prompt: seconds of the n-token call}
    for L in st["prompts"]:
        for b in st["batches"]:
            for kind in MODELS:
                where = dict(model=kind, prompt=L, batch=b)
                if (kind, b) in oom_at and L >= oom_at[(kind, b)]:
                    sec.skip(f"oom at prompt {oom_at[(kind, b)]}", **where); continue
                if not deadline.allows(estimate(seen.setdefault((kind, b), {}), L, calls=2)):
                    capped = True; sec.skip("time cap", **where); continue
                # a second n-token run only when it is short and leaves most of the cap for the points still to come
                r, why = guard(lambda: point(kind, models[kind], prompt_ids(pair, b, L, dev), n, dev, pad,
                                             allow_second=lambda t: t <= st["second_run_max_s"] and deadline.allows(t + 0.3 * cap_s)))
                if r is None:
                    if why == "oom": oom_at[(kind, b)] = min(L, oom_at.get((kind, b), L))
                    sec.skip(why, **where); log(f"[gen] {kind:7s} prompt={L:<6d} b={b:<3d} {why}"); continue
                seen[(kind, b)][L] = r["total_ms"] / 1e3
                row = dict(where, new_tokens=n, state_mb=state_bytes(kind, models[kind], b, L + n) / MB, **r)
                sec.add(row)
                log(f"[gen] {kind:7s} prompt={L:<6d} b={b:<3d} prefill {r['prefill_ms']:8.1f} ms  decode "
                    f"{r['decode_ms_per_token']:6.2f} ms/token  {r['tokens_per_s']:9.1f} tok/s  state {row['state_mb']:.1f} MB")
    models.clear(); free_memory()
    return sec.finish(capped)
