"""Guard tests that need other processes, a real trainer run, a small full filesystem or the bundled teachers: the run
lock between processes (refused, waiting, taken over after SIGKILL, several contenders in turn), checkpoint recovery
under `train` (a damaged newest checkpoint, a missing `latest`), a full tmpfs during a real save, and content checks on
real files. The fast in-process tests live in nbs/52_guard.ipynb.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cab_bench.core import CabError
from cab_bench.guard import (RunLock, check_free_space, checkpoint_bytes, file_sha256, free_bytes, list_checkpoints,
                             recover_checkpoints, save_guard, sniff_text_file, tensors_sha256, verify_provenance)

ROOT = Path(__file__).resolve().parent.parent

# A lock holder: takes RunLock(argv[1], wait=argv[3]), writes its (pid, start, end) to argv[2] and holds the lock until
# the file argv[2] + '.release' exists or argv[4] seconds have passed.
HOLDER = r"""
import json, os, sys, time
from pathlib import Path
from cab_bench.guard import RunLock
run, rec, wait, hold = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
with RunLock(run, wait=wait, command="holder " + rec.name) as lk:
    t0 = time.time(); rec.with_suffix(".held").write_text(json.dumps(dict(stale=lk.stale)))
    while time.time() - t0 < hold and not rec.with_suffix(".release").exists(): time.sleep(0.01)
    t1 = time.time()
rec.write_text(json.dumps(dict(pid=os.getpid(), start=t0, end=t1)))
"""


def holder(run, rec:Path, wait=0.0, hold=60.0)->subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(rec), str(wait), str(hold)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_file(p:Path, proc, timeout=120):
    t = time.time()
    while not p.exists():
        if proc.poll() is not None: raise AssertionError(f"the holder ended early:\n{proc.stdout.read()}")
        if time.time() - t > timeout: proc.kill(); raise AssertionError("timed out")
        time.sleep(0.01)


def test_lock_refused_then_waits_for_another_process(tmp_path):
    run, rec = tmp_path / "runs" / "r", tmp_path / "a.json"
    p = holder(run, rec)
    try:
        wait_file(rec.with_suffix(".held"), p)
        with pytest.raises(CabError) as e: RunLock(run).acquire()
        msg = str(e.value)
        assert f"locked by pid {p.pid} on host {socket.gethostname()}, started 20" in msg and "holder a.json" in msg
        assert str(run) in msg and "choose another run_name" in msg
        t0 = time.monotonic()
        with pytest.raises(CabError, match="after waiting 0.5 s"): RunLock(run, wait=0.5).acquire()
        assert time.monotonic() - t0 >= 0.5
        rec.with_suffix(".release").write_text("")
        with RunLock(run, wait=60) as lk:                         # waits until the holder lets go
            assert p.wait(timeout=60) == 0, p.stdout.read()
            assert lk.stale is None and RunLock.holder(run)["pid"] == os.getpid()
            assert json.loads(rec.read_text())["end"] <= time.time()
    finally:
        if p.poll() is None: p.kill()
        p.wait(); p.stdout.close()
    assert not lk.path.exists() and not run.exists()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    run, rec = tmp_path / "r", tmp_path / "k.json"
    p = holder(run, rec)
    wait_file(rec.with_suffix(".held"), p)
    p.send_signal(signal.SIGKILL); p.wait(); p.stdout.close()
    assert RunLock.holder(run)["pid"] == p.pid                     # the record is left behind ...
    with RunLock(run) as lk:                                       # ... but the lock went with the process
        assert lk.stale["pid"] == p.pid and lk.stale["host"] == socket.gethostname()
        assert RunLock.holder(run)["pid"] == os.getpid()


def test_lock_contenders_take_turns(tmp_path):
    "Three processes started together on one run name: each gets the lock in turn, none crashes, no overlap."
    run = tmp_path / "r"
    procs = [holder(run, tmp_path / f"c{i}.json", wait=120, hold=0.3) for i in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out
    spans = sorted((r["start"], r["end"]) for r in (json.loads((tmp_path / f"c{i}.json").read_text()) for i in range(3)))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    assert not (tmp_path / ".r.lock").exists()


# ------------------------------------------------------------------ checkpoint recovery under the real trainer

def toy_run(out:Path):
    from cab_bench.testing import ToyDistill, toy_datasets, toy_stages
    from cab_bench.train import TrainConfig, train
    tr, va = toy_datasets()
    cfg = TrainConfig(max_steps=20, batch_size=16, lr=0.1, warmup_frac=0.1, log_every=5, ckpt_every=5, keep_ckpts=3,
                      device="cpu", progress=False, out_dir=str(out))
    return train(ToyDistill(), toy_stages(), tr, va, cfg)


def no_time(out:Path)->list:
    return [{k: v for k, v in json.loads(l).items() if k != "time"} for l in (out / "metrics.jsonl").read_text().splitlines()]


def same_run(a:Path, b:Path, ra, rb):
    from cab_bench.train import load_checkpoint
    wa, wb = load_checkpoint(a).model, load_checkpoint(b).model
    assert sorted(wa) == sorted(wb) and tensors_sha256(wa) == tensors_sha256(wb)
    assert ra.final_eval == rb.final_eval and ra.stage_losses == rb.stage_losses and no_time(a) == no_time(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return out, toy_run(out)


def test_damaged_newest_checkpoint_resumes_from_the_previous(reference, tmp_path):
    ref, res_ref = reference
    out = tmp_path / "train"
    toy_run(out)
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-000020", "ckpt-000015", "ckpt-000010"]
    f = out / "ckpt-000020" / "model.safetensors"; b = bytearray(f.read_bytes()); b[-3] ^= 0x10; f.write_bytes(b)
    with pytest.warns(UserWarning, match="ckpt-000020 is damaged"): res = toy_run(out)   # train() recovers by itself
    assert (out / "ckpt-000020.damaged").is_dir()
    assert res.resumed_from == 15
    same_run(ref, out, res_ref, res)                               # identical to the uninterrupted run


def test_missing_latest_is_rebuilt_not_wiped(reference, tmp_path):
    ref, res_ref = reference
    out = tmp_path / "train"
    toy_run(out)
    (out / "latest").unlink()
    with pytest.warns(UserWarning, match="latest"): res = toy_run(out)                   # rebuilt by train(), nothing wiped
    assert len(list_checkpoints(out)) >= 2
    assert res.resumed_from == 20                                  # nothing trained again
    same_run(ref, out, res_ref, res)


# ------------------------------------------------------------------ a full disk

@pytest.fixture
def small_disk(tmp_path):
    "A 2 MiB tmpfs (root only); skipped where one cannot be mounted."
    d = tmp_path / "disk"; d.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None: pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try: yield d
    finally:
        if subprocess.run(["umount", str(d)]).returncode: subprocess.run(["umount", "-l", str(d)], check=True)   # busy: detach


def write_ckpt(out:Path, net, opt):
    "A checkpoint-like write (safetensors weights, torch-saved optimizer) into `out/ckpt-000001.tmp`, guarded."
    from safetensors.torch import save_file
    part = out / "ckpt-000001.tmp"
    with save_guard(part, out):
        part.mkdir()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(part / "model.safetensors"))
        torch.save(opt.state_dict(), part / "optimizer.pt")
    return part


@pytest.mark.parametrize("fails_in", ["safetensors", "torch.save"])
def test_full_disk_is_a_clear_error_and_a_retry_finishes(small_disk, fails_in):
    out = small_disk / "train"; out.mkdir()
    # 3 MiB of weights fill the 2 MiB disk in save_file; 0.75 MiB of weights fit, then Adam's 1.5 MiB of moments do not
    big = torch.nn.Linear(1024, 768, bias=False) if fails_in == "safetensors" else torch.nn.Linear(512, 384, bias=False)
    opt = torch.optim.AdamW(big.parameters()); big(torch.randn(2, big.in_features)).sum().backward(); opt.step()
    need = checkpoint_bytes(big, opt)
    with pytest.raises(CabError, match=re.escape(f"out_dir={str(out)!r} has ") + f".* needs about {need} bytes"):
        check_free_space(out, need)
    with pytest.raises(CabError) as e: write_ckpt(out, big, opt)
    assert f"out_dir={str(out)!r} ran out of disk space" in str(e.value) and "ckpt-000001.tmp was removed" in str(e.value)
    assert not (out / "ckpt-000001.tmp").exists() and free_bytes(out) > 1.9 * 2**20   # the partial write is gone
    small = torch.nn.Linear(64, 64); opt2 = torch.optim.AdamW(small.parameters())
    check_free_space(out, checkpoint_bytes(small, opt2, extra=0))
    part = write_ckpt(out, small, opt2)                              # the retry in the same place succeeds
    from safetensors.torch import load_file
    assert tensors_sha256(load_file(part / "model.safetensors")) == tensors_sha256(small.state_dict())


# ------------------------------------------------------------------ content checks on real files

def test_tampered_bundled_teacher_is_refused(tmp_path):
    src = ROOT / "data" / "teachers" / "vit_digits"
    assert verify_provenance(src / "model.safetensors")["verified"]
    for f in ("model.safetensors", "provenance.json"): shutil.copy(src / f, tmp_path / f)
    w = tmp_path / "model.safetensors"; b = bytearray(w.read_bytes())
    for i in (10_000, 20_000, 30_000, 40_000): b[i] ^= 0x01          # four flipped bytes
    w.write_bytes(b)
    with pytest.raises(CabError, match=f"weights file {w} has sha256 {file_sha256(w)}"): verify_provenance(w)


def test_images_and_binaries_are_not_text(tmp_path):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    pngs = tmp_path / "pngs"; pngs.mkdir()
    for i in range(3): plt.imsave(pngs / f"{i}.png", np.random.default_rng(i).random((8, 8)))
    for f in sorted(pngs.iterdir()):
        with pytest.raises(CabError, match=f"text corpus file {f} is a PNG image"): sniff_text_file(f)
    jpg = tmp_path / "x.jpg"; plt.imsave(jpg, np.zeros((8, 8, 3)), format="jpeg")
    with pytest.raises(CabError, match="JPEG"): sniff_text_file(jpg)
    pt = tmp_path / "w.pt"; torch.save({"a": torch.ones(3)}, pt)
    with pytest.raises(CabError, match="zip archive"): sniff_text_file(pt)
    rnd = tmp_path / "random.bin"; rnd.write_bytes(np.random.default_rng(0).integers(1, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(CabError, match="not UTF-8 text"): sniff_text_file(rnd)     # no NUL byte, no magic: invalid UTF-8
    assert sniff_text_file(Path(json.__file__)) == Path(json.__file__)            # real text: the stdlib's source
