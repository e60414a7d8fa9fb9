"""Test configuration: markers for GPU-only (`cuda`) and long (`slow`) tests."""
import os

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (run on the GPU machine)")
    config.addinivalue_line("markers", "slow: long-running; still part of the default CI run")
    config.addinivalue_line("markers", "xdist_group(name): tests pytest-xdist keeps on one worker (--dist loadgroup)")
    # under pytest-xdist (-n N) each worker gets its share of the cores, and so do the processes its tests start:
    # torch's one thread per core in every worker oversubscribes them (several times slower, as under nbdev_test)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        n = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) // workers)
        torch.set_num_threads(n)
        os.environ["OMP_NUM_THREADS"] = str(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
