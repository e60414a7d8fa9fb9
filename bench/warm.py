"""Pre-warm the Triton kernels the suite will call, in parallel processes, before anything is timed.

mamba-ssm's SSD kernels are Triton kernels that autotune: the first call for each (head dim, state size, chunk
size, dtype, ...) compiles every candidate configuration, about 30 s (forward) to 100 s (forward + backward) per
family on a cold machine, one configuration after another. `run_all.py` starts one process per family at once, each
making the same library calls as its section at a small batch and length (the autotuning keys do not include them),
and waits for all. The compiled kernels land in Triton's on-disk cache, and `run_all.py` sets
TRITON_CACHE_AUTOTUNING=1, so the configuration each autotuning picked is cached on disk too and a section's own
warm-up only loads it. The cost is that the pre-warm processes autotune while competing for the GPU, so a pick can
differ from what a lone process would choose. The first machine-wide run showed that without this sharing a
section's warm-up on a fresh machine repeated the whole autotuning (222 s in the step section).

The `scan` family compiles cab_bench's chunked selective scan (its scan form is compiled with static shapes) at
every shape the ops section times; inductor's on-disk graph cache then serves the section.

    python bench/warm.py ops,scan,lm,hedgehog [--smoke]     # prints one JSON line: seconds per family
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from benchlib import autocast, configure, device


def warm_ops(smoke:bool):
    "The SSD kernels at ENV.md's head dim / state size / chunk, fp32, forward and forward+backward (the ops section)."
    from bench_ops import SSDCase, SelectiveCase, cuda_unavailable, runner, settings
    dev, st = device(), settings(smoke)
    for dtype in st["dtypes"]:
        cases = [SSDCase(dict(st["env_shapes"]["ssd_scan"], b=2, l=min(512, st["env_shapes"]["ssd_scan"]["l"])), dtype, dev, st["chunk_size"]),
                 SelectiveCase(dict(st["env_shapes"]["selective_scan"], b=2), dtype, dev)]
        for case in cases:
            path = "chunked" if cuda_unavailable(case.op, dev) else "cuda"
            for pass_ in ("fwd", "fwd+bwd"): runner(case, path, pass_)()


def warm_scan(smoke:bool):
    "cab_bench's chunked selective scan at the ops section's shapes (ENV.md's and the length sweep's), fwd and fwd+bwd."
    from bench_ops import SelectiveCase, runner, settings
    dev, st = device(), settings(smoke)
    shapes = [st["env_shapes"]["selective_scan"]] + [dict(st["sweep_shapes"]["selective_scan"], l=l) for l in st["lengths"]]
    for dtype in st["dtypes"]:
        for shape in shapes:
            case = SelectiveCase(shape, dtype, dev)
            for pass_ in ("fwd", "fwd+bwd"): runner(case, "chunked", pass_)()
            del case


def warm_lm(smoke:bool):
    "The student's SSD kernels under bf16 autocast: a training step (forward + backward) and generation at batch 1, 2, 16."
    from bench_step import StageStep
    from pairs import lm_batch, lm_pair, lm_student, lm_teacher
    from cab_bench.distill import build_method
    dev, pair = device(), lm_pair(smoke, max_len=1024)
    teacher = lm_teacher(pair, dev, n_layer=1)
    l = 64 if smoke else 512
    for name, stage, opts in (("soft_kd", "kd", dict(ce=1.0)), ("cab", "distill", dict(two_stage=False))):
        step = StageStep(build_method(name, teacher, lm_student(pair, dev, n_layer=1), **opts), stage, dev)
        for _ in range(2): step(lm_batch(teacher.vocab_size, 2, l, dev))
    student = lm_student(pair, dev, n_layer=1).eval()
    for b in (1, 2, 16):
        with autocast(dev): student.generate(torch.randint(3, teacher.vocab_size, (b, l // 2), device=dev), max_new_tokens=2)


def warm_hedgehog(smoke:bool):
    "HedgeMamba stage 1: the Hedgehog layers' SSD scan (head dim + 1 ones-channel, N = 2 d_h, chunk 64, fp32)."
    from bench_step import StageStep
    from pairs import lm_batch, lm_pair, lm_teacher
    from cab_bench.distill import build_method
    dev, pair = device(), lm_pair(smoke, max_len=1024)
    teacher = lm_teacher(pair, dev, n_layer=1)
    step = StageStep(build_method("hedgemamba", teacher, None), "hedgehog", dev)
    for _ in range(2): step(lm_batch(teacher.vocab_size, 2, 64 if smoke else 512, dev))


FAMILIES = dict(ops=warm_ops, scan=warm_scan, lm=warm_lm, hedgehog=warm_hedgehog)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", help="comma-separated: " + ",".join(FAMILIES))
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    configure(a.smoke)
    out = {}
    for fam in a.families.split(","):
        t0 = time.monotonic(); FAMILIES[fam](a.smoke); out[fam] = round(time.monotonic() - t0, 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
