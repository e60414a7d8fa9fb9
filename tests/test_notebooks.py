"""The experiment notebooks as papermill runs them: the main job end to end, and bad parameters stopping it early.

Each case starts a kernel through papermill's command line from the repository root, exactly as a user would.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = [sys.executable, "-m", "papermill"]


def papermill(nb, out, *params, timeout=900):
    "Run `papermill nb out -p k v ...` from the repository root; returns the completed process."
    args = [a for k, v in params for a in ("-p", k, str(v))]
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "PYTEST_CURRENT_TEST")}   # as from a shell
    return subprocess.run([*PAPERMILL, str(nb), str(out), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})


@pytest.mark.slow
def test_run_distill_main_job(tmp_path):
    "The embedded default at 1% of digits (a short budget here): metrics, figures, checkpoints, the result printed to the terminal."
    job = (("data_frac", 0.01), ("max_steps", 30), ("ckpt_every", 5), ("keep_ckpts", 6), ("out_dir", tmp_path / "runs"))
    p = papermill("nbs/run_distill.ipynb", tmp_path / "out.ipynb", *job, ("analysis_samples", 4))
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = tmp_path / "runs" / "vision-cab-vim_digits-f0.01-s0"
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["method"] == "cab" and m["steps"] == 30 and m["data"]["n_train"] == 10 and m["data"]["repeats"] == 7
    assert m["teacher"] > 0.9                                 # the bundled ViT
    assert 0 <= m["student"] <= 1 and len(m["attention"]["layers"]) == 4
    assert {f.name for f in (run_dir / "figures").iterdir()} == {"training.png", "attention_similarity.png"}
    assert "student vim_digits (cab) top-1" in p.stderr and "teacher default:vision top-1" in p.stderr
    # on the terminal: progress lines while training (stage, step, loss, steps/s, ETA), then the result as plain lines
    assert "vision-cab-vim_digits-f0.01-s0: distill step 30/30 loss" in p.stderr and "steps/s, ETA" in p.stderr
    assert "30 steps in" in p.stderr and "distill        30  align=" in p.stderr
    # `-p ckpt_every 5` checkpoints every 5 steps (the notebook passes every setting on)
    from cab_bench.guard import list_checkpoints
    from cab_bench.train import load_checkpoint
    train = run_dir / "train"
    assert [c.name for c in list_checkpoints(train)] == [f"ckpt-{k:06d}" for k in (30, 25, 20, 15, 10, 5)]
    assert load_checkpoint(train / "ckpt-000005").state["config"]["ckpt_every"] == 5
    # the same settings again: the finished run is reused (no training), the result printed again
    again = papermill("nbs/run_distill.ipynb", tmp_path / "out2.ipynb", *job, ("analysis_samples", 0))
    assert again.returncode == 0 and "finished before, reusing it" in (tmp_path / "out2.ipynb").read_text()
    assert json.loads((run_dir / "metrics.json").read_text()) == m


BAD = [  # parameter, value, words the error must contain
    ("data_frac", 0, ["data_frac=0", "(0, 1]"]),
    ("data_frac", 1.5, ["data_frac=1.5", "(0, 1]"]),
    ("method", "cabb", ["method='cabb'", "'cab'", "'soft_kd'"]),
    ("teacher", "timm:resnet50", ["teacher='timm:resnet50'", "default:vision"]),
    ("student", "vim_huge", ["student='vim_huge'", "'vim_digits'"]),
    ("student", "mamba_lm_test", ["student='mamba_lm_test'", "a vision student", "'vim_digits'"]),
    ("method", "hedgemamba", ["method='hedgemamba'"]),      # a language-only method: it cannot align this pair
    ("augment", "yes", ["augment='yes'", "True, False"]),
    ("device", "cuda:7", ["device='cuda:7'"]),                # a device this machine lacks
    ("data_fraction", 0.01, ["unknown parameter 'data_fraction'", "did you mean 'data_frac'"]),   # a misspelled name
]


@pytest.mark.slow
@pytest.mark.parametrize("name,value,words", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_run_distill_bad_parameter(tmp_path, name, value, words):
    "A bad parameter stops the notebook in its first cells, names the parameter and what is allowed, writes nothing."
    out = tmp_path / "out.ipynb"
    p = papermill("nbs/run_distill.ipynb", out, (name, value), ("out_dir", tmp_path / "runs"))
    assert p.returncode != 0
    nb = json.loads(out.read_text())
    failed = [c for c in nb["cells"] if c["cell_type"] == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code.index(failed[0]) <= 2, "the error came later than the settings cell"
    err = next(o for o in failed[0]["outputs"] if o.get("output_type") == "error")
    msg = err["ename"] + ": " + err["evalue"]
    assert err["ename"] == "CabError", msg
    for w in words: assert w in msg, (w, msg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())   # no half-written run directory
    assert p.stderr.strip().splitlines()[-1] == msg.splitlines()[0]        # the terminal ends with the error, one line
    assert "error: " + err["evalue"].splitlines()[0] in p.stderr           # the line the kernel wrote to the terminal
