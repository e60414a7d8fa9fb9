"""Project-level checks: the exported package matches the notebooks, and the benchmark script runs."""
import filecmp
import os
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


def test_readme_test_command_is_ci():
    "README's test command is the one `.ci/run` runs."
    import re
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert ci in readme, ci


def test_bench_ops_smoke(tmp_path):
    "The ops benchmark runs its CPU smoke configuration and writes results with the environment."
    out = tmp_path / "ops.json"
    subprocess.run([sys.executable, "-m", "bench.bench_ops", "--smoke", "--out", str(out)], check=True,
                   capture_output=True, cwd=ROOT)
    r = json.loads(out.read_text())
    assert r["smoke"] and r["env"]["torch"]
    paths = {(row["op"], row["path"], row["pass_"]) for row in r["rows"]}
    for op in ("selective_scan", "ssd_scan"):
        for path in ("ref", "chunked"):
            for p in ("fwd", "fwd+bwd"):
                assert (op, path, p) in paths
    assert all(row["ms"] > 0 for row in r["rows"])


# distributions the package needs without importing them itself: torch.utils.tensorboard imports tensorboard for the
# trainer's event files; the main job and the explorer are notebooks (papermill, ipykernel, ipywidgets)
RUNTIME_ONLY = {"tensorboard", "papermill", "ipykernel", "ipywidgets"}
DIST_OF = {"PIL": "pillow", "sklearn": "scikit-learn", "fla": "fla-core"}   # import name -> distribution name where they differ
# imported only on CUDA by the optional fast paths: fla-core is in the `cuda` extra, triton comes with torch's CUDA builds
OPTIONAL = {"fla-core", "triton"}


def imported_distributions():
    "The third-party distributions cab_bench's modules import anywhere (functions included)."
    import ast
    out = set()
    for f in (ROOT / "cab_bench").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top != "cab_bench": out.add(DIST_OF.get(top, top))
    return out


def test_requirements_are_what_is_imported():
    "settings.ini's requirements are exactly the distributions the package imports, plus the notebooks' runtime."
    import configparser
    import re
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    declared = {re.split(r"[<>=!~\[; ]", r)[0].lower() for r in cfg["DEFAULT"]["requirements"].split()}
    want = (imported_distributions() - OPTIONAL) | RUNTIME_ONLY
    cuda = {re.split(r"[<>=!~\[; ]", r)[0].lower() for r in cfg["DEFAULT"]["cuda_requirements"].split()}
    assert "fla-core" in cuda, "fla-core belongs to the cuda extra"
    assert declared == want, f"declared but not needed: {sorted(declared - want)}; needed but not declared: {sorted(want - declared)}"


def test_wheel_carries_the_bundled_teachers(tmp_path):
    "A wheel built from the checkout holds the bundled teachers, and installed elsewhere it loads `default:vision`."
    import zipfile
    src = tmp_path / "src"
    for item in ("cab_bench", "data", "setup.py", "settings.ini", "README.md", "MANIFEST.in"):
        p = ROOT / item
        (shutil.copytree(p, src / item, ignore=shutil.ignore_patterns("__pycache__")) if p.is_dir() else shutil.copy(p, src / item))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("cab_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("cab_bench/data/teachers/vit_digits/model.safetensors", "cab_bench/data/teachers/gpt2_stdlib/config.json"):
        assert f in names, f
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    code = ("import cab_bench, torch; from cab_bench.models import load_teacher; t = load_teacher('default:vision'); "
            "from cab_bench.models.teachers import data_dir; "
            "print(cab_bench.__file__); print(t.kind, data_dir()); print(tuple(t(torch.zeros(1, 1, 8, 8)).logits.shape))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAB_BENCH_DATA")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(site)), out                     # the installed copy, not the checkout
    assert out[1] == f"vision {site / 'cab_bench' / 'data'}", out   # the teacher came with the package
    assert out[2] == "(1, 10)", out
