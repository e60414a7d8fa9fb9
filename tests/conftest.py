"""Test configuration: markers for GPU-only (`cuda`) and long (`slow`) tests."""
import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (run on the GPU machine)")
    config.addinivalue_line("markers", "slow: long-running; still part of the default CI run")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
