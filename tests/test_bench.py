"""The benchmark suite's smoke configuration: one command runs every section on the CPU and writes complete results.

The GPU configuration is the same code with larger shapes (`python bench/run_all.py` on a CUDA machine).
"""
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ops", "step", "vision", "gen")
LM_LABELS = ("soft_kd", "cab", "mohawk_orient", "cab_align", "hedgemamba_hedgehog")
VISION_LABELS = ("soft_kd", "cab", "mohawk_orient")


def run_script(name:str, *args)->str:
    "Run `bench/<name>` in a fresh interpreter; it must succeed. Returns its standard output."
    r = subprocess.run([sys.executable, str(ROOT / "bench" / name), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r.stdout


def bench_module(name:str):
    "Import a module of `bench/` (not a package) for its functions."
    sys.path.insert(0, str(ROOT / "bench"))
    try: return importlib.import_module(name)
    finally: sys.path.pop(0)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    "Run the whole suite once (about 15-30 s on two cores) and hand its folder and output to the tests."
    out = tmp_path_factory.mktemp("bench")
    stdout = run_script("run_all.py", "--smoke", "--out", out)
    return out, stdout, {s: json.loads((out / f"{s}.json").read_text()) for s in (*SECTIONS, "run")}


def finite_positive(row, *keys):
    for k in keys:
        v = row[k]
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (k, v, row)


def test_every_section_records_environment_and_completes(smoke):
    _, _, res = smoke
    for s in SECTIONS:
        r = res[s]
        assert r["section"] == s and r["status"] == "complete" and r["smoke"] is True, (s, r["status"])
        env = r["env"]
        for k in ("timestamp", "device", "torch", "versions", "commit", "source_hash", "backend_report", "python"):
            assert env[k], (s, k)
        assert set(env["versions"]) >= {"torch", "triton", "timm", "transformers", "mamba-ssm"}
        assert r["settings"] and r["results"], s
        assert not [x for x in r["skipped"] if x["why"].startswith("error")], r["skipped"]
    run = res["run"]
    assert run["status"] == "complete" and set(run["sections"]) == set(SECTIONS)
    assert run["prewarm"]["status"] == "ok", run["prewarm"]


def test_ops_every_path_and_pass(smoke):
    _, _, res = smoke
    ops = res["ops"]
    rows = {(r["kind"], r["op"], r["path"], r["pass_"]) for r in ops["results"]}
    for op in ("selective_scan", "ssd_scan"):
        for p in ("fwd", "fwd+bwd"):
            assert ("env", op, "ref", p) in rows and ("env", op, "chunked", p) in rows
            assert {r["l"] for r in ops["results"] if r["kind"] == "sweep" and r["op"] == op and r["pass_"] == p} == set(ops["settings"]["lengths"])
        # the smoke run is on the CPU: the kernel path is recorded as unavailable, with the reason, not timed
        assert ops["unavailable"][op]["cuda"] and not any(r["path"] == "cuda" for r in ops["results"])
    for r in ops["results"]: finite_positive(r, "ms", "floor_mb", "gb_per_s", "pct_of_copy")
    finite_positive(ops["copy_bandwidth"], "gb_per_s")
    assert ops["summary"]["ssd_scan/float32/fwd+bwd"]["ref_over_chunked"] > 0


def test_step_every_method_length_and_the_breakdowns(smoke):
    out, _, res = smoke
    step, vis = res["step"], res["vision"]
    st = step["settings"]
    got = {(r["method"], r["L"]) for r in step["results"]}
    assert got == {(m, L) for m in LM_LABELS for L in st["lengths"]}
    for r in step["results"]:
        finite_positive(r, "ms", "tokens_per_s", "batch")
        assert r["batch"] * r["L"] == r["tokens"]
        if r["L"] == st["ref_len"]:
            assert r["phases"]["total_ms"] > 0 and r["phases"]["backward_ms"] > 0, r["method"]
    prof = {r["method"]: r["profile"] for r in step["results"] if r.get("profile")}
    assert set(prof) == {"soft_kd", "cab", "cab_align", "mohawk_orient"}
    for p in prof.values():
        assert p["top_time"] and (out / p["file"]).exists()
    assert {r["method"] for r in vis["results"]} == set(VISION_LABELS)
    for r in vis["results"]: finite_positive(r, "ms", "images_per_s", "batch")
    vprof = {r["method"]: r for r in vis["results"] if r.get("profile")}
    assert set(vprof) == {"soft_kd", "cab"}
    for r in vprof.values():
        assert r["phases"]["total_ms"] > 0 and (out / r["profile"]["file"]).exists()


def test_generation_every_point(smoke):
    _, _, res = smoke
    gen = res["gen"]
    st = gen["settings"]
    got = {(r["model"], r["prompt"], r["batch"]) for r in gen["results"]}
    assert got == {(m, p, b) for m in ("student", "teacher") for p in st["prompts"] for b in st["batches"]}
    for r in gen["results"]:
        finite_positive(r, "prefill_ms", "total_ms", "tokens_per_s", "state_mb")
        assert r["new_tokens"] == st["new_tokens"]


def test_summary_states_the_targets(smoke):
    out, stdout, _ = smoke
    md = (out / "SUMMARY.md").read_text()
    assert "## Targets" in md and "## Targets" in stdout
    for q in ("CAB step time / soft_kd step time", "CAB peak memory / MOHAWK stage-1 peak memory",
              "student / teacher generation tokens/s, batch 1", "chunked PyTorch time / mamba-ssm kernel time"):
        assert q in md, q
    for sec in ("## 1. Ops", "## 2. Distillation step, language", "## 2b. Distillation step, vision", "## 3. Generation"):
        assert sec in md


def test_verdict_wording():
    summary = bench_module("summary")
    assert summary.verdict(1.1, 1.15, True) == "**met**"
    assert summary.verdict(1.3, 1.15, True) == "**missed** by 13%"
    assert summary.verdict(0.35, 0.1, True) == "**missed**: 3.50x the target"
    assert summary.verdict(2.5, 5.0, False) == "**missed**: 2.00x short of the target"
    assert summary.verdict(None, 5.0, False) == "not measured"


def test_sweeps_stop_at_oom(tmp_path, monkeypatch):
    "A point that runs out of GPU memory is recorded as 'oom', longer sequences of that method are skipped, the rest runs."
    import torch
    benchlib, bench_step = bench_module("benchlib"), bench_module("bench_step")
    threads = torch.get_num_threads()
    monkeypatch.setattr(benchlib, "_ON_CPU", [False])     # configure() sets this fresh flag; the module's own comes back after
    benchlib.configure(True)
    real = bench_step.lm_batch
    def batch(vocab, b, l, dev, seed=0):
        if l >= 64: raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return real(vocab, b, l, dev, seed)
    monkeypatch.setattr(bench_step, "lm_batch", batch)
    monkeypatch.setattr(bench_step, "LM_METHODS", bench_step.LM_METHODS[:1])
    try: r = bench_step.run_lm(tmp_path / "step.json", {}, smoke=True, cap_s=60, strict=True, do_profile=False)
    finally: torch.set_num_threads(threads)
    assert [x["L"] for x in r["results"]] == [32]                      # lengths run 64 (oom), 32, then 128 (skipped)
    assert {(x["L"], x["why"]) for x in r["skipped"]} == {(64, "oom"), (128, "oom at L=64")}
    assert json.loads((tmp_path / "step.json").read_text())["status"] == "complete"


def test_summary_renders_gpu_shaped_results(smoke, tmp_path):
    "The summary's GPU-only branches (memory target, notes, kernel columns) on the smoke results with memory figures added."
    out, _, res = smoke
    summary = bench_module("summary")
    res = json.loads(json.dumps(res))
    gpu = dict(name="test GPU", capability="9.0", memory_gb=141.0, multiprocessors=132, count=1, driver="x")
    for s in SECTIONS:
        res[s]["env"]["gpu"], res[s]["smoke"] = gpu, False
    for i, r in enumerate(res["step"]["results"]):       # made-up memory figures: only the rendering is under test
        r["peak_gb"], r["static_gb"] = 10.0 + i, 1.0
        if r.get("phases"): r["phases"].update(static_gb=1.0, after_teacher_gb=2.0, after_forward_gb=5.0, peak_gb=10.0 + i)
    for r in res["gen"]["results"]: r["peak_gb"], r["static_gb"] = 3.0, 1.0
    ops = res["ops"]
    ops["results"] += [dict(r, path="cuda", ms=r["ms"] / 10) for r in ops["results"] if r["path"] == "chunked"]
    ops["summary"] = summary_ratios = {k: dict(v, chunked_over_cuda=10.0) for k, v in ops["summary"].items()}
    md = summary.render(res)
    assert "CAB peak memory / MOHAWK stage-1 peak memory" in md and "above static" in md
    assert "selective_scan fwd: 10.0x" in md and summary_ratios
    if "**missed**" in md.split("## 1. Ops")[0]:
        assert "Where" in md


def test_compare_reruns(smoke, tmp_path):
    "bench/compare.py: a run against itself is unchanged; a slowed point outside its noise range is reported as moved."
    out, _, res = smoke
    compare = bench_module("compare")
    same = compare.compare(out, out)
    assert ", 0 moved" in same and "**moved**" not in same and "step time cab / soft_kd" in same
    slow = tmp_path / "slow"
    slow.mkdir()
    for s in (*SECTIONS, "run"):
        d = json.loads((out / f"{s}.json").read_text())
        if s == "step":
            for r in d["results"]:
                if r["method"] == "cab": r.update(ms=r["ms"] * 3, ms_min=r["ms_max"] * 3, ms_max=r["ms_max"] * 4)
        (slow / f"{s}.json").write_text(json.dumps(d))
    moved = compare.compare(out, slow)
    assert "**moved**" in moved and "+200.0%" in moved


def test_align_checkpoint_script(tmp_path):
    "bench/align_checkpoint.py on the CPU: both settings of every CAB case, next to soft_kd, timed and written."
    out = tmp_path / "ac.json"
    run_script("align_checkpoint.py", "--smoke", "--rounds", 2, "--out", out)
    res = json.loads(out.read_text())["results"]
    cab = [x for x in res if x["method"] == "cab"]
    assert {(x["label"], x["align_checkpoint"]) for x in cab} == {(l, s) for l in ("vision cab", "lm cab one stage", "lm cab align stage")
                                                                   for s in (True, False)}
    assert {x["label"] for x in res if x["method"] == "soft_kd"} == {"vision soft_kd", "lm soft_kd"}
    for x in res:
        finite_positive(x, "ms")
        assert len(x["ms_rounds"]) == 2
