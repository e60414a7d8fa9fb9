"""CAB's alignment with and without activation checkpointing of its bridges: step time and peak memory.

    python -m bench.studies.align_checkpoint --out bench/results/align_checkpoint_h200.json [--rounds 2] [--smoke]

`align_checkpoint` (a `cab` option, on by default) recomputes the stacked bridge MLPs in the backward pass instead of
keeping their activations. This times the trainer's optimizer step (bench_step.StageStep) of CAB's stages with the
option on and off, next to soft_kd, on the suite's two pairs: DeiT-Tiny-size -> Vim-Tiny-size at 224 px, batch 128
(bridge width 128, 96 bridges), and GPT-2-small-size -> 12-layer Mamba-2 at L=2048, batch 8 (bridge width 768).
The two settings are measured in alternating rounds, so drift of the machine shows up as spread, not as a difference.
"""
import argparse

from ..benchlib import GB, configure, device, environment, free_memory, log, measure, write_json
from ..cases import lm_batch, lm_pair, lm_student, lm_teacher, vision_batch, vision_pair, vision_student, vision_teacher
from ..bench_step import StageStep, _build

# (label, task, method, stage, options); cab rows run with align_checkpoint True and False
CASES = [
    ("vision soft_kd", "vision", "soft_kd", "kd", {}),
    ("vision cab", "vision", "cab", "distill", {}),
    ("lm soft_kd", "lm", "soft_kd", "kd", dict(ce=1.0)),
    ("lm cab one stage", "lm", "cab", "distill", dict(two_stage=False)),
    ("lm cab align stage", "lm", "cab", "align", {}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    ap.add_argument("--smoke", action="store_true", help="tiny pairs on the CPU: checks the script")
    a = ap.parse_args(argv)
    configure(a.smoke)
    dev = device()
    vp, lp = vision_pair(a.smoke), lm_pair(a.smoke)
    vb, (lb, L) = (8, (4, 64)) if a.smoke else (128, (8, 2048))
    teachers = dict(vision=vision_teacher(vp, dev), lm=lm_teacher(lp, dev))
    batches = dict(vision=vision_batch(teachers["vision"].num_classes, vb, vp.img_size, dev),
                   lm=lm_batch(teachers["lm"].vocab_size, lb, L, dev))
    out = dict(env=environment(), smoke=a.smoke, vision=dict(pair=vp.to_dict(), batch=vb), lm=dict(pair=lp.to_dict(), batch=lb, L=L),
               rounds=a.rounds, results=[])
    for label, task, name, stage, opts in CASES:
        settings = [True, False] if name == "cab" else [None]
        runs = {s: [] for s in settings}
        for r in range(a.rounds):
            for s in (settings if r % 2 == 0 else settings[::-1]):
                student = vision_student(vp, dev) if task == "vision" else lm_student(lp, dev)
                o = dict(opts, **({} if s is None else dict(align_checkpoint=s)))
                step = StageStep(_build(name, teachers[task], student, o), stage, dev)
                m = measure(lambda: step(batches[task]), dev, warmup=2, min_reps=3, max_reps=10, budget_s=1.5)
                runs[s].append(m)
                step.release(); step = None; free_memory()
        for s, ms in runs.items():
            row = dict(label=label, task=task, method=name, stage=stage, options=opts, align_checkpoint=s,
                       ms=min(m["ms"] for m in ms), ms_rounds=[m["ms"] for m in ms],
                       ms_min=min(m["ms_min"] for m in ms), ms_max=max(m["ms_max"] for m in ms),
                       peak_gb=None if ms[0]["peak_bytes"] is None else max(m["peak_bytes"] for m in ms) / GB)
            out["results"].append(row)
            pk = "-" if row["peak_gb"] is None else f"{row['peak_gb']:.2f} GB"
            log(f"[align_checkpoint] {label:20s} checkpoint={s!s:5s} {row['ms']:8.1f} ms (rounds {[round(x, 1) for x in row['ms_rounds']]})  peak {pk}")
        write_json(a.out, out)
    return out


if __name__ == "__main__":
    main()
