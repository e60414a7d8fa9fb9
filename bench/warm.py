"""Pre-warm the Triton kernels the suite will call, in parallel processes, before anything is timed.

mamba-ssm's SSD kernels are Triton kernels that autotune: the first call for each (head dim, state size, chunk
size, dtype, ...) compiles every candidate configuration, about 30 s (forward) to 100 s (forward + backward) per
family on a cold machine, one configuration after another. `bench.run_all` starts one process per family at once, each
making the same library calls as its section at a small batch and length (the autotuning keys do not include them),
and waits for all. The compiled kernels land in Triton's on-disk cache, and `bench.run_all` sets
TRITON_CACHE_AUTOTUNING=1, so the configuration each autotuning picked is cached on disk too and a section's own
warm-up only loads it. The cost is that the pre-warm processes autotune while competing for the GPU, so a pick can
differ from what a lone process would choose. The first machine-wide run showed that without this sharing a
section's warm-up on a fresh machine repeated the whole autotuning (222 s in the step section).

The `scan` family compiles cab_bench's chunked selective scan (its scan form is compiled with static shapes) at
every shape the ops section times; inductor's on-disk graph cache then serves the section.

    python -m bench.warm ops,scan,lm,hedgehog [--smoke]     # prints one JSON line: seconds per family
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from .benchlib import configure
from .bench_ops import warm_ops, warm_scan
from .bench_step import warm_hedgehog, warm_lm


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
