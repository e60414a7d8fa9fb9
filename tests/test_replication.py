"""The replication grid's runner (bench/studies/replication.py): the pre-registered grid itself, and a part's cells
stopped by SIGTERM (a device call's time limit) that checkpoint, are resumed by the next call and end exactly as
uninterrupted cells."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.append(str(ROOT))   # bench is a package at the repository root
from bench.studies import replication as rep


def test_grid_is_the_preregistered_one():
    p = rep.parts()
    assert {k: len(v) for k, v in p.items()} == dict(V01=18, V05=18, V10=18, V20=18, VABL=18, LMAIN=14, LSPLIT=3)
    names = [c["config"]["run_name"] for cells in p.values() for c in cells]
    assert len(names) == len(set(names))
    for cells in p.values():
        for c in cells:
            cfg, m, o = c["config"], c["config"]["method"], c["config"]["method_opts"]
            base = rep.VISION if cfg["task"] == "vision" else rep.LANGUAGE
            assert {k: cfg[k] for k in base} == base and cfg["ckpt_every"] in (100, 200)
            if cfg["task"] == "vision":                       # like-for-like: KL at tau 1, weight 1, no label CE
                assert m == "vanilla" or o.get("ce") == 0.0
                if m in ("soft_kd", "attn_reuse", "mohawk"): assert o == dict(tau=1.0, ce=0.0)
            else:                                            # KL 1 + CE 1 in every method's end-task stage
                if m in ("soft_kd", "attn_reuse", "mohawk"): assert o == dict(tau=1.0, ce=1.0)
                if m.startswith("hedgemamba"): assert (o["kl"], o["ce"], o["tau"]) == (1.0, 1.0, 1.0)
                if m == "cab": assert (o["stage2_kl"], o["stage2_ce"]) == (1.0, 1.0)
    assert sorted(c["config"]["seed"] for c in p["V10"] if c["label"] == "cab") == [0, 1, 2]


SCRIPT = r'''
import json, sys
from pathlib import Path
from bench.studies import replication as rep
spec = json.loads(sys.argv[1])
rep.parts = lambda: {"T": spec["cells"]}
res = rep.run_part("T", Path(spec["out"]), workers=1, fashion=None)
print("RESULT " + json.dumps(res))
'''


def _cells(teacher:str)->list:
    base = dict(task="vision", teacher=teacher, student="vim_test", data="digits", data_frac=0.3, batch_size=8,
                max_steps=30, ckpt_every=None, log_every=5, device="cpu", eval_teacher=False, analysis_samples=0,
                progress=False)
    return [dict(part="T", label=m, config=dict(base, method=m, method_opts={}, seed=0, run_name=f"t-{m}"))
            for m in ("soft_kd", "vanilla")]


def _runner(cells, out:Path)->subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(dict(cells=cells, out=str(out)))], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _result(p:subprocess.Popen, timeout=600)->tuple[list, str]:
    text, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, text[-3000:]
    line = [l for l in text.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[7:]), text


def _same(a:Path, b:Path):
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for k in ("student", "student_eval", "stages", "evals", "steps"): assert ma[k] == mb[k], k


@pytest.mark.slow
def test_sigterm_stops_with_checkpoints_and_the_next_call_resumes(tmp_path):
    from cab_bench.models import make_tiny_teacher
    cells = _cells(make_tiny_teacher("vit", tmp_path / "vit", img_size=8, patch_size=2, in_chans=1))
    from cab_bench.experiment import DistillConfig, run
    for c in cells: run(DistillConfig.from_dict(dict(c["config"], out_dir=str(tmp_path / "ref"))))   # uninterrupted, in-process
    out = tmp_path / "cut"
    p = _runner(cells, out)
    log = out / "t-soft_kd" / "train" / "metrics.jsonl"
    t = time.time()
    while not (log.exists() and any(json.loads(l).get("step", 0) >= 10 for l in log.read_text().splitlines() if l.strip())):
        assert p.poll() is None and time.time() - t < 300, "the cell ended or never started"
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    res, text = _result(p)
    by = {r["run_name"]: r for r in res}
    assert by["t-soft_kd"]["ok"] is None and by["t-soft_kd"]["why"].startswith("stopped at step"), text[-2000:]
    step = int(by["t-soft_kd"]["why"].split()[-1])
    assert 10 <= step < 30 and (out / "t-soft_kd" / "train" / "latest").read_text().strip().endswith(f"{step:06d}")
    assert by["t-vanilla"]["ok"] is None and not (out / "t-vanilla" / "metrics.json").exists()   # not started: left
    assert not (out / "_logs" / rep.STOP).exists()
    again, _ = _result(_runner(cells, out))                    # the next call: the stopped cell resumes, the other runs
    assert [r["ok"] for r in again] == [True, True]
    for c in cells: _same(tmp_path / "ref" / c["config"]["run_name"], out / c["config"]["run_name"])
    assert rep.collect(out, tmp_path / "records", commit="test") == 0        # not grid cells: nothing collected
