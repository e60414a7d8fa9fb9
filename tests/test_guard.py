"""Guard tests that need other processes, a real trainer run, a small full filesystem or the bundled teachers: the run
lock between processes (refused, waiting, taken over after SIGKILL, several contenders in turn), checkpoint recovery
under `train` (a damaged newest checkpoint, a missing `latest`), a full tmpfs during a real save and during `train`
(then a re-run that matches an uninterrupted one), SIGINT then resume, content checks on real files (a tampered
bundled teacher, also as `default:vision`; a changed corpus neither reused nor resumed), every listed bad input named
with nothing written, two processes on one run name (`run` and a sweep), and `-p ckpt_every` through papermill. The
fast in-process tests live in nbs/52_guard.ipynb (and the notebooks of the modules that use the guards).
"""
import functools
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

def toy_run(out:Path, **kw):
    from cab_bench.testing import ToyDistill, toy_datasets, toy_stages
    from cab_bench.train import TrainConfig, train
    tr, va = toy_datasets()
    cfg = TrainConfig(**{**dict(max_steps=20, batch_size=16, lr=0.1, warmup_frac=0.1, log_every=5, ckpt_every=5, keep_ckpts=3,
                                device="cpu", progress=False, out_dir=str(out)), **kw})
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


def fill(d:Path, leave:int):
    "Write a ballast file into `d` until at most `leave` bytes are free (a tmpfs: exactly, to the page)."
    with open(d / "ballast", "wb") as f:
        try:
            while free_bytes(d) > leave: f.write(b"\0" * max(4096, min(1 << 20, free_bytes(d) - leave))); f.flush()
        except OSError as e:
            assert e.errno == 28, e


@pytest.mark.parametrize("how", ["free space check", "write fails"])
def test_full_disk_during_train_then_rerun_is_identical(small_disk, reference, monkeypatch, how):
    "The disk fills up in the middle of a run: a CabError naming out_dir, no partial checkpoint left; freed, a re-run matches."
    import cab_bench.train as T
    ref, res_ref = reference
    out = small_disk / "train"
    if how == "write fails": monkeypatch.setattr(T, "check_free_space", lambda *a, **k: None)   # the write itself hits ENOSPC
    def fill_at_10(stage, step, total, loss, **kw):
        if step == 10: fill(small_disk, 0 if how == "write fails" else 64 << 10)
    with pytest.raises(CabError) as e: toy_run(out, on_step=fill_at_10)
    msg = str(e.value)
    assert f"out_dir={str(out)!r}" in msg, msg
    assert ("ran out of disk space" in msg and "ckpt-000010.tmp was removed" in msg if how == "write fails"
            else "bytes (" in msg and "checkpoint ckpt-000010 needs about" in msg), msg
    assert not list(out.glob("*.tmp")) and [p.name for p in list_checkpoints(out)][0] == "ckpt-000008"   # the stage end
    (small_disk / "ballast").unlink()
    monkeypatch.undo()
    res = toy_run(out)                                            # the same run again, with room: it resumes and finishes
    assert res.resumed_from == 8
    same_run(ref, out, res_ref, res)


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


# ------------------------------------------------------------------ runs: bad inputs, content, two processes, the notebook

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cab_bench.models import make_tiny_teacher
    d = tmp_path_factory.mktemp("tiny")
    return dict(vision=make_tiny_teacher("vit", d / "vit", img_size=8, patch_size=2, in_chans=1),
                language=make_tiny_teacher("gpt2", d / "gpt2"))


def vision_cfg(tiny, out, **kw):
    from cab_bench.experiment import DistillConfig
    return DistillConfig(**{**dict(teacher=tiny["vision"], student="vim_test", max_steps=2, batch_size=8, device="cpu",
                                   progress=False, eval_teacher=False, out_dir=str(out)), **kw})


def language_cfg(tiny, out, **kw):
    return vision_cfg(tiny, out, **{**dict(task="language", teacher=tiny["language"], student="mamba2_lm_test",
                                           method="soft_kd", seq_len=16, batch_size=4, data_frac=0.5), **kw})


def tree(d:Path)->dict:
    "Every file under `d` (relative path -> sha256), to show that nothing was written."
    return {str(p.relative_to(d)): file_sha256(p) for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def corpora(tmp:Path)->dict:
    tmp.mkdir(parents=True, exist_ok=True)
    import numpy as np
    (tmp / "empty.txt").write_text("")
    (tmp / "blob.bin").write_bytes(np.random.default_rng(0).integers(1, 256, 20_000, dtype=np.uint8).tobytes())
    pngs = tmp / "pngs"; pngs.mkdir()
    for i in range(3): (pngs / f"{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return dict(empty=tmp / "empty.txt", blob=tmp / "blob.bin", pngs=pngs)


# (case, settings over the defaults, words the error must hold); `{empty}`, `{blob}`, `{pngs}`: the corpora's paths
BAD_INPUTS = [
    ("unknown student option", dict(student_opts={"foo": 1}), ["student_opts={'foo': 1}", "'foo' is not one", "depth"]),
    ("student depth 0", dict(student_opts={"depth": 0}), ["student_opts['depth']=0", "in [1, inf]"]),
    ("empty text file", dict(language=True, data="text:{empty}"), ["text corpus file {empty} is empty"]),
    ("binary text file", dict(language=True, data="text:{blob}"), ["text corpus file {blob} is not UTF-8 text"]),
    ("folder of PNGs", dict(language=True, data="text:{pngs}"), ["text corpus file {pngs}/00.png is a PNG image"]),
    ("analysis_samples -1", dict(analysis_samples=-1), ["analysis_samples=-1", "an int >= 0"]),
    ("300-character run_name", dict(run_name="r" * 300), ["run_name='rrr", "at most 128 characters (it has 300)"]),
    ("run_name with a newline", dict(run_name="a\nb"), ["run_name='a\\nb'", "line breaks"]),
    ("run_name of whitespace", dict(run_name=" "), ["run_name=' '", "not empty or only whitespace"]),
    ("out_dir that is a file", dict(out_dir="{empty}"), ["out_dir='{empty}'", "this is a file"]),
    ("out_dir below a file", dict(out_dir="{empty}/runs"), ["out_dir=", "{empty} is a file"]),
    ("max_steps 10**12", dict(max_steps=10**12), ["max_steps=1000000000000", "at most 1e+09 steps"]),
    ("epochs 10**12", dict(max_steps=None, epochs=1e12), ["epochs=1000000000000.0", "at most"]),
]


@pytest.mark.parametrize("case,kw,words", BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_is_named_and_nothing_is_written(tiny, tmp_path, case, kw, words):
    from cab_bench.experiment import run
    c = corpora(tmp_path / "in")
    paths = lambda t: functools.reduce(lambda t, kv: t.replace("{%s}" % kv[0], str(kv[1])), c.items(), t)
    kw = {k: paths(v) if isinstance(v, str) else v for k, v in kw.items()}
    out = Path(kw.get("out_dir", tmp_path / "runs"))
    before = tree(tmp_path / "in")
    with pytest.raises(CabError) as e:
        run((language_cfg if kw.pop("language", False) else vision_cfg)(tiny, tmp_path / "runs", **kw))
    for w in words: assert paths(w) in str(e.value), (paths(w), str(e.value))
    assert tree(tmp_path / "runs") == {} and tree(tmp_path / "in") == before     # nothing written anywhere
    assert not out.is_dir() or not any(out.iterdir())


def test_damaged_run_file_is_named_and_nothing_is_written(tiny, tmp_path):
    "A finished run whose config.json or metrics.json was cut short: run() names the file, and writes nothing."
    from cab_bench.experiment import run
    cfg = vision_cfg(tiny, tmp_path / "runs")
    run(cfg)
    for damaged, what in (("config.json", "run config"), ("metrics.json", "run metrics")):
        c = cfg.replace(out_dir=str(tmp_path / damaged))
        shutil.copytree(cfg.run_dir, c.run_dir)
        f = c.run_dir / damaged
        f.write_text(f.read_text()[:-20])                          # cut short, as by a full disk or a bad copy
        before = tree(c.run_dir.parent)
        with pytest.raises(CabError, match=re.escape(f"{what} {f} is not valid JSON (line ")): run(c)
        assert tree(c.run_dir.parent) == before                    # nothing written (no lock file left either)


def test_tampered_default_teacher_is_refused(tiny, tmp_path, monkeypatch):
    "The bundled teacher as `default:vision` resolves it, with four bytes flipped: refused before anything is written."
    from cab_bench.experiment import run
    d = shutil.copytree(ROOT / "data" / "teachers" / "vit_digits", tmp_path / "data" / "teachers" / "vit_digits")
    w = d / "model.safetensors"; b = bytearray(w.read_bytes())
    for i in (10_000, 20_000, 30_000, 40_000): b[i] ^= 0x01
    w.write_bytes(b)
    monkeypatch.setenv("CAB_BENCH_DATA", str(tmp_path / "data"))
    cfg = vision_cfg(tiny, tmp_path / "runs", teacher="default:vision", student="vim_digits")
    with pytest.raises(CabError) as e: run(cfg)
    assert "teacher='default:vision'" in str(e.value) and f"weights file {w} has sha256 {file_sha256(w)}" in str(e.value)
    assert tree(tmp_path / "runs") == {}


def test_changed_corpus_refuses_reuse_and_resume(tiny, tmp_path):
    "Another text of the same size under one `text:` path: a finished run is not reused, an interrupted one not resumed."
    from cab_bench.experiment import run
    from cab_bench.runs import RunDir
    corpus = tmp_path / "corpus.txt"
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300))
    corpus.write_text(text)
    cfg = language_cfg(tiny, tmp_path / "runs", data=f"text:{corpus}", data_frac=0.2, max_steps=4, ckpt_every=2)
    first = run(cfg)
    rd = RunDir.of(cfg)
    corpus.write_text(text.replace("return", "yield "))
    with pytest.raises(CabError, match=r"other content \(data\.corpus_sha256\.train: '[0-9a-f]{12}\.\.\.' -> '[0-9a-f]{12}\.\.\.'"):
        run(cfg)                                                    # finished: not reused
    rd.metrics_file.unlink()                                        # as if it had been interrupted after its last checkpoint
    (rd.train_dir / "latest").write_text("ckpt-000002\n")
    before = tree(rd.path)
    with pytest.raises(CabError, match="it is not reused or resumed"): run(cfg)   # interrupted: not resumed on other data
    assert tree(rd.path) == before
    corpus.write_text(text)                                         # the original text again: resumed, the same result
    again = run(cfg)
    assert again["student"] == first["student"] and again["steps"] == 4


# A run process: argv[1] is a JSON spec {cfgs: [flat settings], sweep: bool, release: path}. It runs the first config
# with run() (holding at its first logged step until the file `release` exists), or the configs with run_sweep, and
# prints one line `RESULT <json>` with the metrics.
RUNNER = r"""
import json, sys, time
from pathlib import Path
from cab_bench.experiment import DistillConfig, run
from cab_bench.sweep import run_sweep
spec = json.loads(sys.argv[1])
cfgs = [DistillConfig(**c) for c in spec["cfgs"]]
def hold(*a, **k):
    while not Path(spec["release"]).exists(): time.sleep(0.02)
res = run_sweep(cfgs, progress=False) if spec["sweep"] else [dict(metrics=run(cfgs[0], on_step=hold))]
print("RESULT " + json.dumps(res, default=str), flush=True)
"""


def runner(spec:dict, log:Path)->subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(spec, default=str)], env=env, cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)


def result(p:subprocess.Popen, log:Path)->list:
    assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
    return json.loads(next(l for l in log.read_text().splitlines() if l.startswith("RESULT "))[7:])


@pytest.mark.slow
def test_two_processes_one_run_name(tiny, tmp_path):
    """Process A runs a config; process B, a sweep over the same config and another, starts while A holds the run: B
    puts it off, runs the other cell, then waits for A and reuses A's result. Meanwhile this process is refused at once
    (wait=0, naming A) and with other settings; none crashes, no result is lost, the shared run trains once."""
    from cab_bench.experiment import run
    from cab_bench.guard import RunBusy
    from cab_bench.runs import RunDir
    cfg = vision_cfg(tiny, tmp_path / "runs", max_steps=3, log_every=1)
    other = cfg.replace(seed=1, run_name=None)
    release = tmp_path / "release"
    a = runner(dict(cfgs=[cfg.to_dict()], sweep=False, release=release), tmp_path / "a.log")
    wait_file(tmp_path / "runs" / f".{cfg.run_name}.lock", a)
    while (RunLock.holder(cfg.run_dir) or {}).get("pid") != a.pid or not cfg.run_dir.joinpath("config.json").exists():
        assert a.poll() is None, (tmp_path / "a.log").read_text(); time.sleep(0.02)
    b = runner(dict(cfgs=[cfg.to_dict(), other.to_dict()], sweep=True, release=release), tmp_path / "b.log")
    t0 = time.time()
    while "waiting for it" not in (tmp_path / "b.log").read_text():   # B ran the other cell and now waits for A
        assert b.poll() is None and time.time() - t0 < 300, (tmp_path / "b.log").read_text(); time.sleep(0.05)
    assert f"is in use by pid {a.pid} on host {socket.gethostname()}" in (tmp_path / "b.log").read_text()
    with pytest.raises(RunBusy, match=f"locked by pid {a.pid} on host"): run(cfg, wait=0)
    with pytest.raises(CabError, match=r"with other settings \(lr\)"): run(cfg.replace(lr=0.001))
    release.write_text("")
    ra, rb = result(a, tmp_path / "a.log"), result(b, tmp_path / "b.log")
    assert ra[0]["metrics"] == rb[0]["metrics"] == RunDir.of(cfg).read_metrics()   # one result, written once (same wall_time)
    assert rb[1]["metrics"]["run_dir"] == str(other.run_dir) and rb[1]["state"] == "new"
    assert json.loads(cfg.run_dir.joinpath("config.json").read_text())["lr"] == cfg.lr
    assert not list((tmp_path / "runs").glob(".*.lock"))


# `-p ckpt_every 5` through papermill: checked in tests/test_notebooks.py's main-job run (one notebook run less)


@pytest.mark.slow
def test_sigint_mid_training_then_resume(tmp_path):
    "Ctrl-C (SIGINT) in the middle of training, then the same run again: identical to an uninterrupted run."
    from test_train import assert_same_run, run_toy, spawn, toy_cfg, wait_for   # the trainer tests' script and helpers
    ref = tmp_path / "ref"
    _, res_ref = run_toy(toy_cfg(ref), augment=True)
    out = tmp_path / "b"
    p = spawn(dict(cfg=toy_cfg(out), module=dict(delay=0.03), augment=True))
    wait_for(lambda: (out / "latest").exists() and int((out / "latest").read_text().strip()[5:]) >= 10, p)
    p.send_signal(signal.SIGINT); text, _ = p.communicate(timeout=60)
    assert p.returncode != 0 and "KeyboardInterrupt" in text, text[-2000:]
    _, res = run_toy(toy_cfg(out), augment=True)
    assert 10 <= res.resumed_from < 40
    assert_same_run(ref, out, res_ref, res)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stop_request_checkpoints_the_step_reached(tmp_path, sig):
    "SIGTERM or Ctrl-C between periodic checkpoints: a checkpoint at the step reached, then the same run resumes from it exactly."
    from test_train import assert_same_run, run_toy, spawn, toy_cfg, train_records, wait_for
    cfg = lambda out: toy_cfg(out, ckpt_every=None)          # checkpoints only at stage ends: a stop must write its own
    ref = tmp_path / "ref"
    _, res_ref = run_toy(cfg(ref), augment=True)
    out = tmp_path / "b"
    p = spawn(dict(cfg=cfg(out), module=dict(delay=0.03), augment=True))
    wait_for(lambda: (out / "metrics.jsonl").exists() and any(r["step"] >= 12 for r in train_records(out)), p)
    p.send_signal(getattr(signal, sig)); text, _ = p.communicate(timeout=60)
    assert p.returncode != 0, text[-2000:]
    assert ("TrainingStopped" if sig == "SIGTERM" else "KeyboardInterrupt") in text and "writing a checkpoint" in text, text[-2000:]
    step = int((out / "latest").read_text().strip()[5:])
    assert step >= 12 and f"step {step}" in text, text[-2000:]
    _, res = run_toy(cfg(out), augment=True)
    assert res.resumed_from == step
    assert_same_run(ref, out, res_ref, res)
