"""Time and peak memory of one optimizer step of each distillation method's stage, language and vision.

One step is the trainer's own `cab_bench.train.train_step`, without the trainer's logging and checkpoints: the
stage's trainable parameters (`stage_parameters`), its AdamW groups and schedule (`stage_optimizer`), the weighted
loss of `LossModel` under bf16 autocast (GPU), backward, the finiteness check, gradient clipping at 1.0, the
optimizer and schedule steps, `zero_grad(set_to_none=True)` (`optimizer_update`). The committed results were
measured before the step was shared with the trainer (the same operations, without the finiteness check).

Language (`section='step'`): sequence lengths from 512 up (ENV-style reference length 2048 first), batch =
tokens_per_step // L; a method's sweep stops at its first OOM. Vision (`section='vision'`): 224 px, images/s.
At the reference length each method also gets a phase breakdown (teacher forward, student forward, the rest of the
forward, backward, optimizer; memory after each) and, with `profile=True`, a torch.profiler table of one step.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from .benchlib import Deadline, Guard, SectionLog, GB, device, autocast, estimate, free_memory, log, measure, sync
from . import cases   # the warm-up's batches: `cases.lm_batch` (the sections' `lm_batch` can be replaced in tests)
from .cases import (LM_METHODS, PROFILED, VISION_METHODS, VISION_PROFILED, lm_batch, lm_pair, lm_student, lm_teacher, n_params,
                    vision_batch, vision_pair, vision_student, vision_teacher)
from cab_bench.distill import build_method
from cab_bench.train import (LossModel, TrainConfig, frozen_ids, optimizer_update, stage_optimizer, stage_parameters, train_mode,
                             train_step)

def settings(smoke:bool, section:str)->dict:
    if section == "step":
        if smoke: return dict(lengths=[64, 32, 128], tokens_per_step=256, ref_len=64, point_budget_s=0.05, max_reps=3)
        return dict(lengths=[2048, 512, 1024, 4096, 8192, 16384, 32768], tokens_per_step=16384, ref_len=2048,
                    point_budget_s=1.5, max_reps=10)
    if smoke: return dict(batch=dict(soft_kd=8, cab=8, mohawk_orient=4), point_budget_s=0.05, max_reps=3)
    return dict(batch=dict(soft_kd=128, cab=128, mohawk_orient=8), point_budget_s=1.5, max_reps=10)


# ------------------------------------------------------------------------------------------------------ one optimizer step
class StageStep:
    "One optimizer step of `stage` of a built method: the trainer's own `train_step` (and its pieces, for the phase timings)."
    def __init__(self, method, stage_name:str, dev, lr:float=1e-4, clip:float=1.0):
        self.module = method.module.to(dev)
        self.stage = next((s for s in method.stages if s.name == stage_name), None)
        if self.stage is None: raise ValueError(f"{method.name} has no stage {stage_name!r}: {[s.name for s in method.stages]}")
        frozen = frozen_ids(self.module)
        named = stage_parameters(self.module, self.stage, frozen)
        self.params = [p for _, p in named]
        self.opt, self.sched = stage_optimizer(named, TrainConfig(max_steps=10_000, lr=lr, warmup_frac=0.0), self.stage, 10_000)
        self.weights = self.stage.weights(0, 10_000)
        self.module.active_terms = {t for t, w in self.weights.items() if w}
        train_mode(self.module, frozen)                           # the trainer's mode: all-frozen submodules in eval mode
        self.losses, self.dev, self.clip = LossModel(self.module), dev, clip
        self.trainable = sum(p.numel() for p in self.params)

    def forward(self, batch):
        "The step's forward alone (the weighted total), for the phase timings."
        with autocast(self.dev):
            total, _ = self.losses(batch, self.weights)
        return total

    def backward(self, total): total.backward()

    def update(self): optimizer_update(self.opt, self.sched, self.params, self.clip)

    def __call__(self, batch):
        train_step(self.losses, iter([batch]), self.weights, self.opt, self.sched, self.params, clip_grad=self.clip,
                   autocast=lambda: autocast(self.dev))

    def release(self):
        self.opt.zero_grad(set_to_none=True)
        del self.opt, self.sched, self.losses, self.module


# -------------------------------------------------------------------------------------------------- where the step goes
def _tensor_bytes(x)->int:
    if isinstance(x, torch.Tensor): return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)): return sum(_tensor_bytes(v) for v in x)
    if hasattr(x, "__dataclass_fields__"): return sum(_tensor_bytes(getattr(x, f)) for f in x.__dataclass_fields__)
    return 0


class _Marks:
    "Time stamps (CUDA events or perf_counter) and allocated memory at named points of one step."
    def __init__(self, dev):
        self.dev, self.t, self.mem = dev, {}, {}
    def __call__(self, name):
        if self.dev.type == "cuda":
            e = torch.cuda.Event(enable_timing=True); e.record(); self.t[name] = e
            self.mem[name] = torch.cuda.memory_allocated(self.dev)
        else: self.t[name] = time.perf_counter()
    def ms(self, a, b):
        if a not in self.t or b not in self.t: return 0.0
        if self.dev.type == "cuda": return self.t[a].elapsed_time(self.t[b])
        return (self.t[b] - self.t[a]) * 1e3
    def gb(self, name): return self.mem[name] / GB if name in self.mem else None


def phases(step:StageStep, batch, repeats:int=3)->dict:
    "Median over `repeats` instrumented steps of each phase's ms (and of the memory marks); see `_phases`."
    runs = [_phases(step, batch) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | dict(repeats=repeats)


def _phases(step:StageStep, batch)->dict:
    "One instrumented step: ms of teacher forward, student forward, the rest of the forward, backward, optimizer; memory."
    m, dev = _Marks(step.dev), step.dev
    caps = {}
    def hooks(mod, name):
        def pre(*_): m(name + "_start")
        def post(_m, _a, out):
            m(name + "_end")
            if name == "teacher": caps["teacher_outputs_gb"] = _tensor_bytes(out) / GB
        return [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    hs = hooks(step.module.teacher, "teacher") + hooks(step.module.student, "student")
    try:
        sync(dev)
        if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
        m("start"); total = step.forward(batch); m("forward_end")
        step.backward(total); del total; m("backward_end")
        step.update(); m("update_end")
        sync(dev)
    finally:
        for h in hs: h.remove()
    teacher, student = m.ms("teacher_start", "teacher_end"), m.ms("student_start", "student_end")
    fwd = m.ms("start", "forward_end")
    out = dict(teacher_forward_ms=teacher, student_forward_ms=student, other_forward_ms=fwd - teacher - student,
               backward_ms=m.ms("forward_end", "backward_end"), optimizer_ms=m.ms("backward_end", "update_end"),
               total_ms=m.ms("start", "update_end"), **caps)
    if dev.type == "cuda":
        out.update(static_gb=m.gb("start"), after_teacher_gb=m.gb("teacher_end"), after_forward_gb=m.gb("forward_end"),
                   peak_gb=torch.cuda.max_memory_allocated(dev) / GB)
    return out


def profile(step:StageStep, batch, path:Path, label:str, top:int=25)->dict:
    "torch.profiler of one step (after warm-up): the top ops by self device time and by self memory, as text and JSON."
    from torch.profiler import ProfilerActivity, record_function
    dev = step.dev
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    ranges = {}
    def hooks(mod, name):
        def pre(*_): ranges[name] = record_function(f"bench::{name}_forward"); ranges[name].__enter__()
        def post(*_): ranges.pop(name).__exit__(None, None, None)
        return [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    step(batch); sync(dev)
    hs = hooks(step.module.teacher, "teacher") + hooks(step.module.student, "student")
    try:
        with torch.profiler.profile(activities=acts, profile_memory=True) as prof:
            with record_function("bench::forward"): total = step.forward(batch)
            with record_function("bench::backward"): step.backward(total)
            del total
            with record_function("bench::optimizer"): step.update()
            sync(dev)
    finally:
        for h in hs: h.remove()
    ka = prof.key_averages()
    gpu = dev.type == "cuda"
    tkey, mkey = ("self_device_time_total", "self_device_memory_usage") if gpu else ("self_cpu_time_total", "self_cpu_memory_usage")
    text = (f"# {label}: one optimizer step, {path.stem}\n\n## top ops by {tkey}\n" + ka.table(sort_by=tkey, row_limit=top)
            + f"\n\n## top ops by {mkey}\n" + ka.table(sort_by=mkey, row_limit=15))
    path.write_text(text)
    def row(e):
        return dict(name=e.key, calls=e.count, self_time_ms=getattr(e, tkey) / 1e3,
                    total_time_ms=getattr(e, "device_time_total" if gpu else "cpu_time_total") / 1e3,
                    self_memory_mb=getattr(e, mkey) / 2**20)
    by_time = sorted(ka, key=lambda e: getattr(e, tkey), reverse=True)
    ranges_ = [row(e) for e in ka if e.key.startswith("bench::")]
    return dict(file=path.name, time_key=tkey, memory_key=mkey, top_time=[row(e) for e in by_time[:top]],
                top_memory=[row(e) for e in sorted(ka, key=lambda e: getattr(e, mkey), reverse=True)[:15]], ranges=ranges_)


# ------------------------------------------------------------------------------------------------- warming the kernels
def warm_lm(smoke:bool):
    "The student's SSD kernels under bf16 autocast: a training step (forward + backward) and generation at batch 1, 2, 16."
    dev, pair = device(), lm_pair(smoke, max_len=1024)
    teacher = lm_teacher(pair, dev, n_layer=1)
    l = 64 if smoke else 512
    for name, stage, opts in (("soft_kd", "kd", dict(ce=1.0)), ("cab", "distill", dict(two_stage=False))):
        step = StageStep(build_method(name, teacher, lm_student(pair, dev, n_layer=1), **opts), stage, dev)
        for _ in range(2): step(cases.lm_batch(teacher.vocab_size, 2, l, dev))
    student = lm_student(pair, dev, n_layer=1).eval()
    for b in (1, 2, 16):
        with autocast(dev): student.generate(torch.randint(3, teacher.vocab_size, (b, l // 2), device=dev), max_new_tokens=2)


def warm_hedgehog(smoke:bool):
    "HedgeMamba stage 1: the Hedgehog layers' SSD scan (head dim + 1 ones-channel, N = 2 d_h, chunk 64, fp32)."
    dev, pair = device(), lm_pair(smoke, max_len=1024)
    teacher = lm_teacher(pair, dev, n_layer=1)
    step = StageStep(build_method("hedgemamba", teacher, None), "hedgehog", dev)
    for _ in range(2): step(cases.lm_batch(teacher.vocab_size, 2, 64 if smoke else 512, dev))


# ------------------------------------------------------------------------------------------------------------ sections
def _build(name, teacher, student, opts):
    return build_method(name, teacher, student, **opts)


def _describe(methods)->list:
    return [dict(label=l, method=m, stage=s, options=o, what=w) for l, m, s, o, w in methods]


def run_lm(out_path, env:dict, smoke:bool, cap_s:float, strict:bool=False, do_profile:bool=True, teacher=None)->dict:
    "Language: every method's stage over sequence lengths, until OOM or the time cap."
    dev = device()
    st = settings(smoke, "step")
    pair = lm_pair(smoke)
    sec = SectionLog(out_path, "step", env, dict(st, pair=pair.to_dict(), methods=_describe(LM_METHODS),
                     precision="bf16 autocast" if dev.type == "cuda" else "fp32", optimizer="AdamW lr 1e-4, clip 1.0",
                     profile=do_profile), smoke, cap_s)
    deadline, guard = Deadline(cap_s), Guard(strict)
    t0 = time.monotonic()
    warm_lm(smoke); warm_hedgehog(smoke)   # autotune the kernels here before the methods share the cap
    sec.set(warmup_s=round(time.monotonic() - t0, 2))
    teacher = teacher or lm_teacher(pair, dev)
    sec.set(params=dict(teacher=n_params(teacher)))
    prof_dir = Path(out_path).parent
    capped = False
    for i, (label, name, stage, opts, what) in enumerate(LM_METHODS):
        share = deadline.left() / (len(LM_METHODS) - i)          # every method gets its turn under the cap
        mdl = Deadline(share)
        if mdl.left() < 1:
            capped = True; sec.skip("time cap", method=label); continue
        def build():
            student = None if name == "hedgemamba" else lm_student(pair, dev)
            return StageStep(_build(name, teacher, student, opts), stage, dev)
        step, why = guard(build)
        if step is None:
            sec.skip(why, method=label); continue
        sec.data.setdefault("params", {})[label] = dict(student=n_params(step.module.student), trainable=step.trainable)
        oom_len, seen = None, {}                                  # seen: L -> seconds per step
        for L in st["lengths"]:
            where = dict(method=label, L=L)
            if oom_len is not None and L > oom_len:
                sec.skip(f"oom at L={oom_len}", **where); continue
            b = max(1, st["tokens_per_step"] // L)
            if not mdl.allows(estimate(seen, L, calls=5)):
                capped = True; sec.skip("time cap", **where); continue
            box = {}                                              # the batch is made inside the guard: it may not fit either
            def point():
                box["batch"] = lm_batch(teacher.vocab_size, b, L, dev)
                return measure(lambda: step(box["batch"]), dev, warmup=2, min_reps=3, max_reps=st["max_reps"],
                               budget_s=st["point_budget_s"], cap_s=max(mdl.left() - 1, 0.1))
            r, why = guard(point)
            batch = box.pop("batch", None)
            if r is None:
                batch = None
                step.opt.zero_grad(set_to_none=True); free_memory()
                if why == "oom" and (oom_len is None or L < oom_len): oom_len = L
                sec.skip(why, batch=b, **where); log(f"[step] {label:20s} L={L:<6d} b={b:<4d} {why}"); continue
            seen[L] = r["ms"] / 1e3
            row = dict(where, what=what, batch=b, tokens=b * L, ms=r["ms"], ms_min=r["ms_min"], ms_max=r["ms_max"], reps=r["reps"],
                       tokens_per_s=b * L / (r["ms"] / 1e3),
                       peak_gb=None if r["peak_bytes"] is None else r["peak_bytes"] / GB,
                       static_gb=None if r["base_bytes"] is None else r["base_bytes"] / GB)
            if L == st["ref_len"]:
                row["phases"], why = guard(lambda: phases(step, batch))
                if why: row["phases_error"] = why
                if do_profile and label in PROFILED:
                    row["profile"], why = guard(lambda: profile(step, batch, prof_dir / f"profile_{label}_L{L}.txt", label))
                    if why: row["profile_error"] = why
            sec.add(row)
            pk = "-" if row["peak_gb"] is None else f"{row['peak_gb']:.2f} GB"
            log(f"[step] {label:20s} L={L:<6d} b={b:<4d} {r['ms']:9.1f} ms  {row['tokens_per_s']:10.0f} tok/s  peak {pk}")
            batch = None
        step.release(); step = None; free_memory()
    return sec.finish(capped)


def run_vision(out_path, env:dict, smoke:bool, cap_s:float, strict:bool=False)->dict:
    "Vision: images/s and peak memory per method's stage at 224 px; a batch that does not fit is halved."
    dev = device()
    st = settings(smoke, "vision")
    pair = vision_pair(smoke)
    sec = SectionLog(out_path, "vision", env, dict(st, pair=pair.to_dict(), methods=_describe(VISION_METHODS),
                     precision="bf16 autocast" if dev.type == "cuda" else "fp32", optimizer="AdamW lr 1e-4, clip 1.0"), smoke, cap_s)
    deadline, guard = Deadline(cap_s), Guard(strict)
    teacher = vision_teacher(pair, dev)
    capped = False
    for i, (label, name, stage, opts, what) in enumerate(VISION_METHODS):
        mdl = Deadline(deadline.left() / (len(VISION_METHODS) - i))
        if mdl.left() < 1:
            capped = True; sec.skip("time cap", method=label); continue
        step, why = guard(lambda: StageStep(_build(name, teacher, vision_student(pair, dev), opts), stage, dev))
        if step is None:
            sec.skip(why, method=label); continue
        b, r, box = st["batch"][label], None, {}
        while r is None and b >= 1:
            def point():
                box["batch"] = vision_batch(teacher.num_classes, b, pair.img_size, dev)
                return measure(lambda: step(box["batch"]), dev, warmup=2, min_reps=3, max_reps=st["max_reps"],
                               budget_s=st["point_budget_s"], cap_s=max(mdl.left() - 1, 0.1))
            r, why = guard(point)
            if r is None:
                step.opt.zero_grad(set_to_none=True); free_memory()
                sec.skip(why, method=label, batch=b)
                b = b // 2 if why == "oom" else 0
        if r is not None:
            row = dict(method=label, what=what, batch=b, img_size=pair.img_size, ms=r["ms"], ms_min=r["ms_min"], ms_max=r["ms_max"],
                       reps=r["reps"], images_per_s=b / (r["ms"] / 1e3),
                       peak_gb=None if r["peak_bytes"] is None else r["peak_bytes"] / GB,
                       static_gb=None if r["base_bytes"] is None else r["base_bytes"] / GB,
                       params_student=n_params(step.module.student), trainable=step.trainable)
            if label in VISION_PROFILED and mdl.left() > 10 * r["ms"] / 1e3:     # phases (3 steps), one profiled step, margin
                batch = box["batch"]
                row["phases"], why = guard(lambda: phases(step, batch))
                if why: row["phases_error"] = why
                row["profile"], why = guard(lambda: profile(step, batch, Path(out_path).parent / f"profile_vision_{label}.txt", label))
                if why: row["profile_error"] = why
            box.clear()
            sec.add(row)
            log(f"[vision] {label:14s} b={b:<4d} {r['ms']:9.1f} ms {row['images_per_s']:9.1f} img/s")
        step.release(); step = None; free_memory()
    return sec.finish(capped)
