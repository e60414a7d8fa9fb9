"""Project-level checks: the exported package matches the notebooks, and the benchmark script runs."""
import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_nbdev_export_reproduces_package(tmp_path):
    "Exporting the committed notebooks gives exactly the committed `cab_bench/` (the notebooks are the source)."
    for item in ("nbs", "settings.ini"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    exe = Path(sys.executable).with_name("nbdev_export")
    subprocess.run([str(exe)], cwd=tmp_path, check=True, capture_output=True)
    cmp = filecmp.dircmp(ROOT / "cab_bench", tmp_path / "cab_bench", ignore=["__pycache__"])

    def diffs(c, prefix=""):
        out = [prefix + f for f in c.diff_files + c.left_only + c.right_only]
        for name, sub in c.subdirs.items():
            out += diffs(sub, prefix + name + "/")
        return out

    assert diffs(cmp) == [], f"cab_bench/ differs from a fresh nbdev_export: {diffs(cmp)}"


def test_bench_ops_smoke(tmp_path):
    "The ops benchmark runs its CPU smoke configuration and writes results with the environment."
    out = tmp_path / "ops.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_ops.py"), "--smoke", "--out", str(out)], check=True,
                   capture_output=True)
    r = json.loads(out.read_text())
    assert r["smoke"] and r["env"]["torch"]
    paths = {(row["op"], row["path"], row["pass_"]) for row in r["rows"]}
    for op in ("selective_scan", "ssd_scan"):
        for path in ("ref", "chunked"):
            for p in ("fwd", "fwd+bwd"):
                assert (op, path, p) in paths
    assert all(row["ms"] > 0 for row in r["rows"])
