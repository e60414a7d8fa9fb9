"""The suite's shared cases: the teacher/student pairs it times (random init: speed and memory do not depend on the
weights), their batches, and the method stages each step section times.

Language: a GPT-2-small-size teacher (12 layers, d 768, 12 heads, GPT-2 vocabulary) -> a 12-layer Mamba-2 student
(`mamba2_gpt2_6l` with n_layer=12 and headdim=128: 12 heads like the teacher, which MOHAWK's per-head matrix
matching requires; d_state 64). Vision: DeiT-Tiny-size -> Vim-Tiny-size at 224 px. Smoke: tiny versions of both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cab_bench.models import Teacher, create_student, load_teacher


@dataclass
class LMPair:
    "Sizes of the language pair."
    teacher:dict                  # GPT2Config fields
    student:str                   # registered student
    student_overrides:dict        # create_student overrides
    label:str

    def to_dict(self): return asdict(self)


def lm_pair(smoke:bool, max_len:int=32768 + 512)->LMPair:
    "The language pair; `max_len` sets the teacher's position table (prompt + generated tokens must fit)."
    if smoke:
        return LMPair(dict(vocab_size=384, n_embd=32, n_layer=2, n_head=2, n_positions=max_len, bos_token_id=1,
                           eos_token_id=1, pad_token_id=0),
                      "mamba2_lm_test", dict(mixer_kwargs=dict(headdim=32)), "tiny GPT-2 (2 layers, d 32) -> mamba2_lm_test (2 heads)")
    return LMPair(dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=max_len),
                  "mamba2_gpt2_6l", dict(n_layer=12, mixer_kwargs=dict(headdim=128)),
                  "GPT-2-small-size teacher (12 layers, d 768, 12 heads) -> 12-layer Mamba-2 (d 768, 12 heads x 128, N 64)")


def lm_teacher(pair:LMPair, dev, seed:int=0, n_layer:int|None=None)->Teacher:
    "A randomly initialised GPT-2 teacher with the library's SDPA attention, wrapped as a cab_bench `Teacher`."
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = dict(pair.teacher, **({} if n_layer is None else dict(n_layer=n_layer)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(**cfg))
    model.set_attn_implementation("sdpa")
    return Teacher(model, f"bench:gpt2 random init {cfg}", "language", "gpt2").to(dev)


def lm_student(pair:LMPair, dev, seed:int=1, n_layer:int|None=None):
    kw = dict(pair.student_overrides, **({} if n_layer is None else dict(n_layer=n_layer)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_student(pair.student, **kw).to(dev)


@dataclass
class VisionPair:
    teacher_spec:str
    teacher_kwargs:dict
    student:str
    student_overrides:dict
    img_size:int
    label:str
    def to_dict(self): return asdict(self)


def vision_pair(smoke:bool)->VisionPair:
    if smoke:
        return VisionPair("timm:deit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                          num_classes=10), "vim_test", dict(img_size=32, patch_size=8, num_classes=10), 32,
                          "tiny DeiT (32 px, 2 layers) -> vim_test (32 px)")
    return VisionPair("timm:deit_tiny_patch16_224", dict(num_classes=1000), "vim_tiny_patch16_224", dict(num_classes=1000), 224,
                      "DeiT-Tiny-size (random init) -> Vim-Tiny-size, 224 px")


def vision_teacher(pair:VisionPair, dev, seed:int=0)->Teacher:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_teacher(pair.teacher_spec, **pair.teacher_kwargs).to(dev)


def vision_student(pair:VisionPair, dev, seed:int=1):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_student(pair.student, **pair.student_overrides).to(dev)


def lm_batch(vocab:int, b:int, l:int, dev, seed:int=0)->tuple:
    "Random token ids (b, l) and their next-token targets."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, l + 1), generator=g)
    return ids[:, :-1].contiguous().to(dev), ids[:, 1:].contiguous().to(dev)


def vision_batch(classes:int, b:int, size:int, dev, seed:int=0)->tuple:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g).to(dev), torch.randint(0, classes, (b,), generator=g).to(dev)


def n_params(module)->int: return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------- the method stages the step sections time
# (label, method, stage, options, what it computes); the order is the priority under the time cap
LM_METHODS = [
    ("soft_kd", "soft_kd", "kd", dict(ce=1.0), "KL + CE"),
    ("cab", "cab", "distill", dict(two_stage=False), "one stage: CE + KL + 0.5 align (bridge on B/C vs teacher K/Q)"),
    ("mohawk_orient", "mohawk", "orient", {}, "MOHAWK stage 1: per-head Frobenius loss of materialised mixer matrices vs attention"),
    ("cab_align", "cab", "align", {}, "CAB's language stage 1 (two-stage default): alignment only"),
    ("hedgemamba_hedgehog", "hedgemamba", "hedgehog", {}, "HedgeMamba stage 1: Hedgehog feature maps, cosine loss per layer"),
]
VISION_METHODS = [
    ("soft_kd", "soft_kd", "kd", {}, "KL"),
    ("cab", "cab", "distill", {}, "KL + 3 align (vision default, one stage)"),
    ("mohawk_orient", "mohawk", "orient", {}, "MOHAWK stage 1: Vim's per-channel matrices (b, E, l, l) per direction, averaged per head"),
]
PROFILED = ("soft_kd", "cab", "cab_align", "mohawk_orient")
VISION_PROFILED = ("soft_kd", "cab")
