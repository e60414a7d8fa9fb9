"""Trainer tests that need other processes: SIGKILL and resume, a kill inside a checkpoint write, and 2-process DDP
(`accelerate launch`, gloo on CPU) against 1 process. The fast in-process tests live in nbs/50_train.ipynb.

This file is also the training script those processes run: `python tests/test_train.py '<json spec>'` trains the toy
distill module of `cab_bench.testing` with `spec['cfg']` (a TrainConfig dict) and `spec['module']` (ToyDistill options),
and writes `result.json` (the TrainResult) into the out_dir from the main process.
"""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cab_bench.core import CabError
from cab_bench.data import Augmented
from cab_bench.testing import ToyDistill, toy_datasets, toy_stages
from cab_bench.train import NonFiniteLoss, TrainConfig, latest_checkpoint, load_checkpoint, load_weights, train

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def toy_cfg(out, **kw):
    return dict(dict(max_steps=40, batch_size=16, grad_accum=2, lr=0.1, warmup_frac=0.1, eval_every=10, log_every=5,
                     ckpt_every=5, device="cpu", progress=False, out_dir=str(out)), **kw)


def toy_noise(x, generator):
    "The toy runs' training augmentation: Gaussian noise from the item's (seed, epoch, index) generator."
    return x + 0.3 * torch.randn(x.shape, generator=generator)


def run_toy(cfg:dict, module:dict|None=None, augment:bool=False):
    "Train the toy module in this process (optionally on `Augmented` training data, as `experiment.run` uses)."
    tr, va = toy_datasets()
    if augment: tr = Augmented(tr, toy_noise, seed=cfg.get("seed", 0))
    m = ToyDistill(**(module or {}))
    return m, train(m, toy_stages(), tr, va, TrainConfig(**cfg))


def spawn(spec:dict, launch:list|None=None, **kw)->subprocess.Popen:
    "Start this file as a training script (optionally under a launcher) in a new process."
    cmd = [*(launch or [sys.executable]), str(HERE), json.dumps(spec)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def train_records(out:Path)->list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def no_time(out:Path)->list[dict]:
    return [{k: v for k, v in json.loads(l).items() if k != "time"} for l in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a:Path, b:Path, res_a, res_b, atol=0.0):
    "Two out_dirs hold the same final weights, evaluations and logs."
    wa, wb = load_checkpoint(a).model, load_checkpoint(b).model
    assert sorted(wa) == sorted(wb)
    for k in wa: torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=atol, msg=k)
    assert res_b.final_eval == res_a.final_eval and res_b.stage_losses == res_a.stage_losses
    assert no_time(b) == no_time(a)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    "The uninterrupted reference run (dropout on and augmented inputs, so RNG states and the epoch matter for resume)."
    out = tmp_path_factory.mktemp("a")
    return out, run_toy(toy_cfg(out), augment=True)[1]


def wait_for(pred, proc, timeout=120):
    t = time.time()
    while not pred():
        if proc.poll() is not None: raise AssertionError(f"the run ended early:\n{proc.stdout.read()}")
        if time.time() - t > timeout: proc.kill(); raise AssertionError("timed out")
        time.sleep(0.005)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume(run_a, tmp_path):
    out_a, res_a = run_a
    out = tmp_path / "b"
    p = spawn(dict(cfg=toy_cfg(out), module=dict(delay=0.03), augment=True))   # ~0.06 s per step: time to kill it mid-run
    wait_for(lambda: (out / "latest").exists() and int((out / "latest").read_text().strip()[5:]) >= 10, p)
    p.send_signal(signal.SIGKILL); p.wait(); p.stdout.close()
    assert p.returncode == -signal.SIGKILL
    step = load_checkpoint(out).step
    assert 10 <= step < 40, step                                          # killed in the middle
    _, res_b = run_toy(toy_cfg(out), augment=True)
    assert res_b.resumed_from == step
    assert_same_run(out_a, out, res_a, res_b)


@pytest.mark.slow
def test_sigkill_inside_checkpoint_write(run_a, tmp_path):
    out_a, res_a = run_a
    out = tmp_path / "c"
    p = spawn(dict(cfg=toy_cfg(out), kill_in_ckpt=15, augment=True))   # SIGKILL after ckpt-15's files, before the rename
    out_text, _ = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, out_text
    assert (out / "ckpt-000015.tmp" / "meta.json").exists() and not (out / "ckpt-000015").exists()
    assert latest_checkpoint(out).name == "ckpt-000010"
    assert load_checkpoint(out).step == 10                               # the previous checkpoint is intact
    _, res_c = run_toy(toy_cfg(out), augment=True)
    assert res_c.resumed_from == 10 and not list(out.glob("*.tmp"))
    assert_same_run(out_a, out, res_a, res_c)


def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    # dropout off: the processes draw different masks, so only the deterministic part can match (the augmentation,
    # keyed by (seed, epoch, index), is part of it)
    cfg1, cfg2 = toy_cfg(tmp_path / "one", max_steps=30), toy_cfg(tmp_path / "two", max_steps=30)
    _, res1 = run_toy(cfg1, dict(dropout=0.0), augment=True)
    # `--multi_gpu` starts torchrun processes; with device='cpu' (Accelerator(cpu=True)) they use gloo on CPU.
    # (`--cpu --num_processes 2` starts a single process in accelerate 1.15.)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    p = spawn(dict(cfg=cfg2, module=dict(dropout=0.0), augment=True), launch, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text, _ = p.communicate(timeout=300)
    assert p.returncode == 0, text[-4000:]
    res2 = json.loads((tmp_path / "two" / "result.json").read_text())
    assert res2["num_processes"] == 2 and res1.num_processes == 1
    ck1, ck2 = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert sorted(ck2.rng) == [0, 1] and sorted(ck1.rng) == [0]
    for k in ck1.model: torch.testing.assert_close(ck2.model[k], ck1.model[k], rtol=1e-5, atol=1e-5, msg=k)
    r1, r2 = train_records(tmp_path / "one"), train_records(tmp_path / "two")
    assert [r["step"] for r in r1] == [r["step"] for r in r2]
    for a, b in zip(r1, r2):
        for k in ("kd", "ce", "align", "loss", "grad_norm", "lr"):
            if k in a: assert math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6), (a["step"], k, a[k], b[k])
    for k, v in res1.final_eval.items(): assert math.isclose(v, res2["final_eval"][k], rel_tol=1e-5), (k, v, res2["final_eval"][k])
    assert res2["final_eval"]["count"] == 48.0                           # every validation sample once, no padding


def test_errors_name_the_setting(tmp_path):
    with pytest.raises(CabError, match="lrr=0.1 is not allowed.*did you mean 'lr'"): TrainConfig.from_dict(dict(max_steps=3, lrr=0.1))
    with pytest.raises(CabError, match="grad_accum=0"): TrainConfig(max_steps=3, grad_accum=0)
    with pytest.raises(CabError, match="precision='fp8'"): TrainConfig(max_steps=3, precision="fp8")
    with pytest.raises(CabError, match="batch_size=12 is not allowed: expected a multiple of grad_accum"):
        run_toy(toy_cfg(tmp_path, batch_size=12, grad_accum=8))


def test_nan_guard_and_damaged_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"step 7 \(stage 'align'\) in 'kd'"):
        run_toy(toy_cfg(tmp_path, max_steps=20), dict(nan_at=7, nan_term="kd", grad_accum=2))
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "ckpt-000005"
    m = load_weights(ToyDistill(), tmp_path)
    torch.testing.assert_close(m.A_log.detach(), load_checkpoint(ck).model["A_log"])
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CabError, match=f"checkpoint file {f} is damaged"): load_checkpoint(tmp_path)
    # train() does not stop on it: the damaged checkpoint is set aside (no intact one is left) and the run starts again
    with pytest.warns(UserWarning, match="damaged"): run_toy(toy_cfg(tmp_path, max_steps=20))
    assert (tmp_path / "ckpt-000005.damaged").is_dir() and latest_checkpoint(tmp_path).name == "ckpt-000020"


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    import cab_bench.train as T
    if spec.get("kill_in_ckpt"):
        T._before_commit_hook = lambda tmp, step: os.kill(os.getpid(), signal.SIGKILL) if step == spec["kill_in_ckpt"] else None
    _, res = run_toy(spec["cfg"], spec.get("module"), spec.get("augment", False))
    from accelerate import PartialState
    if PartialState().is_main_process:
        (Path(spec["cfg"]["out_dir"]) / "result.json").write_text(json.dumps(res.to_dict()))
