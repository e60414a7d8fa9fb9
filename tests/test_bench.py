"""The benchmark suite's smoke configuration: one command runs every section on the CPU and writes complete results.

The GPU configuration is the same code with larger shapes (`python -m bench.run_all` on a CUDA machine).
"""
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ops", "step", "vision", "gen")
LM_LABELS = ("soft_kd", "cab", "mohawk_orient", "cab_align", "hedgemamba_hedgehog")
VISION_LABELS = ("soft_kd", "cab", "mohawk_orient")


def run_script(module:str, *args)->str:
    "Run `python -m <module>` from the repository root in a fresh interpreter; it must succeed. Returns its standard output."
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r.stdout


def bench_module(name:str):
    "A module of the `bench` package, imported from the repository root."
    if str(ROOT) not in sys.path: sys.path.append(str(ROOT))
    return importlib.import_module(f"bench.{name}")


# the tests of the suite's one smoke run go to one pytest-xdist worker (`--dist loadgroup`), so it runs once
ONE_SMOKE_RUN = pytest.mark.xdist_group("bench_smoke")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    "Run the whole suite once (about 15-30 s on two cores) and hand its folder and output to the tests."
    out = tmp_path_factory.mktemp("bench")
    stdout = run_script("bench.run_all", "--smoke", "--out", out)
    return out, stdout, {s: json.loads((out / f"{s}.json").read_text()) for s in (*SECTIONS, "run")}


def finite_positive(row, *keys):
    for k in keys:
        v = row[k]
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (k, v, row)


@ONE_SMOKE_RUN
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


@ONE_SMOKE_RUN
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


@ONE_SMOKE_RUN
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


@ONE_SMOKE_RUN
def test_generation_every_point(smoke):
    _, _, res = smoke
    gen = res["gen"]
    st = gen["settings"]
    got = {(r["model"], r["prompt"], r["batch"]) for r in gen["results"]}
    assert got == {(m, p, b) for m in ("student", "teacher") for p in st["prompts"] for b in st["batches"]}
    for r in gen["results"]:
        finite_positive(r, "prefill_ms", "total_ms", "tokens_per_s", "state_mb")
        assert r["new_tokens"] == st["new_tokens"]


@ONE_SMOKE_RUN
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
    summary = bench_module("report")
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


@ONE_SMOKE_RUN
def test_summary_renders_gpu_shaped_results(smoke, tmp_path):
    "The summary's GPU-only branches (memory target, notes, kernel columns) on the smoke results with memory figures added."
    out, _, res = smoke
    summary = bench_module("report")
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


@ONE_SMOKE_RUN
def test_compare_reruns(smoke, tmp_path):
    "bench.report's compare: a run against itself is unchanged; a slowed point outside its noise range is reported as moved."
    out, _, res = smoke
    compare = bench_module("report")
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
    "bench.studies.align_checkpoint on the CPU: both settings of every CAB case, next to soft_kd, timed and written."
    out = tmp_path / "ac.json"
    run_script("bench.studies.align_checkpoint", "--smoke", "--rounds", 2, "--out", out)
    res = json.loads(out.read_text())["results"]
    cab = [x for x in res if x["method"] == "cab"]
    assert {(x["label"], x["align_checkpoint"]) for x in cab} == {(l, s) for l in ("vision cab", "lm cab one stage", "lm cab align stage")
                                                                   for s in (True, False)}
    assert {x["label"] for x in res if x["method"] == "soft_kd"} == {"vision soft_kd", "lm soft_kd"}
    for x in res:
        finite_positive(x, "ms")
        assert len(x["ms_rounds"]) == 2


def test_package_layout():
    "bench is a package with one report module and its studies in their own folder; no script edits sys.path."
    bench = ROOT / "bench"
    assert (bench / "__init__.py").exists() and (bench / "studies" / "__init__.py").exists()
    assert not (bench / "results" / "history").exists()
    for gone in ("summary.py", "compare.py", "pairs.py", "align_checkpoint.py", "cab_vision_gpu.py", "chunked_compile.py"):
        assert not (bench / gone).exists(), gone
    for f in [*bench.glob("*.py"), *bench.glob("studies/*.py")]:
        assert "sys.path.insert" not in f.read_text(), f
    report = bench_module("report")
    assert callable(report.write) and callable(report.compare)


def test_stage_step_is_the_trainers_step(tmp_path):
    "StageStep's step is `train_step`: one call changes the weights as the trainer's step with the same settings does."
    import torch
    from cab_bench.distill import build_method
    from cab_bench.testing import random_dataset, tiny_pair
    from cab_bench.train import TrainConfig, train
    bench_step = bench_module("bench_step")
    def pair():
        torch.manual_seed(0); t, s = tiny_pair("gpt2", seed=0); return t, s
    t, s = pair(); m = build_method("soft_kd", t, s)
    ds = random_dataset(t, 4)
    step = bench_step.StageStep(m, "kd", torch.device("cpu"), lr=1e-2)
    step(ds[:4])
    t2, s2 = pair(); m2 = build_method("soft_kd", t2, s2)
    train(m2.module, m2.stages, ds, None, TrainConfig(max_steps=1, batch_size=4, lr=1e-2, warmup_frac=0.0, clip_grad=1.0,
          device="cpu", progress=False, out_dir=str(tmp_path / "train")))
    # the trainer draws the batch in its own order: sums differ in rounding, and Adam's first step (about lr * sign(g)
    # per weight, 1e-2 here) turns that into a few 1e-6 where a gradient is near 0; a missed or different step is 1e-2
    for (n, a), b in zip(s.state_dict().items(), s2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=n)
    assert not torch.equal(s.layers[0].mixer.in_proj.weight, pair()[1].layers[0].mixer.in_proj.weight)



def test_step_vs_mamba_script(tmp_path):
    "Both sides run in their own processes; without mamba-ssm built, no ratio is called met."
    out = tmp_path / "svm.json"
    r = subprocess.run([sys.executable, "-m", "bench.studies.step_vs_mamba", "--smoke", "--cases", "vim_tiny_cab,mamba2_lm_cab",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert set(d["sides"]) == {"with", "without"}
    for side in d["sides"].values():
        assert set(side["cases"]) == {"vim_tiny_cab", "mamba2_lm_cab"} and all(c["ms"] > 0 for c in side["cases"].values())
        for c in side["cases"].values():       # each side says where its time goes (on a CPU: operators, no kernels)
            assert c["profile"]["ops"] and c["profile"]["ops"][0]["cpu_ms"] > 0
    assert d["sides"]["without"]["report"]["selective_scan"]["path"] != "cuda"      # the hidden kernels are not picked
    for v in d["ratios"].values():
        assert v["verdict"].startswith("no comparison") and v["ratio"] > 0
    assert not list(tmp_path.glob("svm.*.json"))          # the children's files are folded in and removed


def test_bench_kernels_renders_a_cut_off_run(tmp_path):
    "--render: verdicts and kernels.md from a kernels.json cut off before SSD; the grid's shape is reported, not judged."
    from bench.bench_kernels import FASHION_NAME
    t = lambda ms, mb: dict(fwd_ms=ms / 4, fwdbwd_ms=ms, peak_mb=mb)
    out = dict(env={"gpu": "a GPU", "torch": "2", "triton": "3", "mamba-ssm": "2", "fla-core": None},
               report={"ssd_scan": {}}, triton_scan_config={"SCAN_T": 16},
               selective_scan={"vim_tiny b128 d384 L197 N16": dict(cuda=t(1.0, 100), triton=t(1.2, 120)),
                               FASHION_NAME: dict(cuda=t(1.0, 100), triton=t(0.9, 100))}, ssd_scan={})
    f = tmp_path / "kernels.json"
    f.write_text(json.dumps(out))
    r = subprocess.run([sys.executable, "-m", "bench.bench_kernels", "--render", str(f)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    v = {(x["op"], x["shape"]): x for x in json.loads(f.read_text())["verdicts"]}
    assert v[("selective_scan", "vim_tiny b128 d384 L197 N16")]["verdict"] == "missed"          # 1.2x > 1.0
    assert abs(v[("selective_scan", "vim_tiny b128 d384 L197 N16")]["time_ratio"] - 1.2) < 1e-9
    assert v[("selective_scan", FASHION_NAME)]["verdict"] == "(not a target)"
    assert v[("ssd_scan", "all")]["verdict"] == "not measured in this run"
    assert "| ssd_scan | all |" in (tmp_path / "kernels.md").read_text()


def test_step_vs_mamba_combines_parts(tmp_path):
    "A run cut off before its study JSON: a child's JSON and a log of the other child's lines combine into it."
    from bench.studies.step_vs_mamba import main
    w = tmp_path / "with.json"
    w.write_text(json.dumps(dict(mode="with", report={"selective_scan": {"path": "cuda"}},
                                 cases={"vim_tiny_cab": dict(ms=200.0, ms_min=190.0, ms_max=210.0, reps=9, profile={})})))
    log = tmp_path / "svm.log"
    log.write_text("noise\n[with] vim_tiny_cab: 999.0 ms (min 290.0, max 310.0, 9 reps)\n"     # the JSON's case wins
                   "[without] vim_tiny_cab: 300.0 ms (min 290.0, max 310.0, 9 reps)\n"
                   "[without] mamba2_lm_cab: 290.0 ms (min 289.0, max 291.0, 10 reps)\n")
    out = tmp_path / "svm.json"
    main(["--out", str(out), "--cases", "vim_tiny_cab,mamba2_lm_cab", "--parts", f"{w},{log}", "--machine", "a GPU"])
    d = json.loads(out.read_text())
    r = d["ratios"]["vim_tiny_cab"]
    assert r["ratio"] == 1.5 and r["verdict"] == "missed by 36%" and d["machine"] == "a GPU" and d["environment"] is None
    assert d["ratios"]["mamba2_lm_cab"]["verdict"].startswith("not measured")        # its with side is missing
    assert d["sides"]["without"]["cases"]["mamba2_lm_cab"]["reps"] == 10 and d["sides"]["without"]["sources"] == ["svm.log"]


def test_generation_smollm2_script(tmp_path):
    "Every prompt x batch x model point is timed, with state sizes and student/teacher ratios (tiny pair, any device)."
    out = tmp_path / "gen.json"
    r = subprocess.run([sys.executable, "-m", "bench.studies.generation_smollm2", "--smoke", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert {(x["model"], x["prompt"], x["batch"]) for x in d["rows"]} == {(m, L, b) for m in ("student", "teacher")
                                                                       for L in (64, 256) for b in (1, 2)}
    assert all(x["decode_tokens_per_s"] > 0 and x["state_mb"] > 0 for x in d["rows"])
    t = {(x["prompt"], x["batch"]): x["state_mb"] for x in d["rows"] if x["model"] == "teacher"}
    assert t[(256, 1)] > t[(64, 1)] and t[(64, 2)] == pytest.approx(2 * t[(64, 1)])    # the KV cache grows; the state does not
    s = {(x["prompt"], x["batch"]): x["state_mb"] for x in d["rows"] if x["model"] == "student"}
    assert s[(256, 1)] == s[(64, 1)]
    assert set(d["student_vs_teacher"]) == {f"prompt{L}_b{b}" for L in (64, 256) for b in (1, 2)}


def test_lm_step_backend_script(tmp_path):
    "Every stage x path is timed, and two paths (here chunked vs the sequential reference) give the same first loss."
    out = tmp_path / "lm_step.json"
    r = subprocess.run([sys.executable, "-m", "bench.studies.lm_step_backend", "--smoke", "--backends", "chunked,ref",
                        "--stages", "soft_kd/kd,cab/align", "--profile", "--top", "5", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    p = json.loads(out.read_text())["points"]
    for k in ("soft_kd/kd", "cab/align"):
        assert all(p[f"{k}/{be}"]["ms"] > 0 and p[f"{k}/{be}"]["ssd_path"]["path"] == be for be in ("chunked", "ref"))
        assert p[f"{k}/loss_rel_diff"] < 1e-4, p
    assert p["soft_kd/kd/chunked"]["first_loss"] != p["cab/align/chunked"]["first_loss"]   # each stage its own loss
    prof = p["soft_kd/kd/chunked"]["profile"]                 # --profile: the operators by time (no kernels on a CPU)
    assert prof["steps"] == 2 and 0 < len(prof["ops"]) <= 5 and all(o["cpu_ms"] > 0 for o in prof["ops"])


@pytest.mark.slow
def test_scan_tune_script(tmp_path):
    "The tuner's code path under Triton's interpreter: every setting checked against the defaults, a best one chosen."
    out = tmp_path / "st.json"
    r = subprocess.run([sys.executable, "-m", "bench.studies.scan_tune", "--smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, env=dict(os.environ, TRITON_INTERPRET="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())["shapes"]["tiny"]
    kinds = {(x["kind"], x["SCAN_FWD"], x.get("SCAN_BWD")) for x in d["rows"]}
    assert kinds == {("fwd", "tiles", None), ("fwd", "states", None), ("fwd", "seq", None), ("fwd_bwd", "tiles", "tiles"),
                     ("fwd_bwd", "tiles", "states"), ("fwd_bwd", "states", "states"),   # long chunks: after the 'states' forward
                     ("fwd_bwd", "seq", "seq")}
    assert "states" in {e["SCAN_FWD"] for e in d["estimates"]} <= {"tiles", "states", "seq"}   # T 32: only 'states' forwards
    assert {e["SCAN_BWD"] for e in d["estimates"]} == {"tiles", "states", "seq"}
    assert all("error" not in x and x["err"] < 1e-4 for x in d["rows"])          # the interpreter computes in fp32
    assert d["default_fwd_bwd_ms"] > 0 and d["best"]["fwd_bwd_ms"] > 0 and not d["best"]["below_noise"]
    assert all(e["below_noise"] == (e["bwd_ms"] <= 0) for e in d["estimates"])   # the interpreter's timings are noisy
    assert {x["SCAN_SEQ_IO"] for x in d["rows"] if x["SCAN_FWD"] == "seq"} == {"step", "staged"}   # both ways a step reads
    assert {e["SCAN_SEQ_IO"] for e in d["estimates"] if e["SCAN_BWD"] == "seq"} == {"step", "staged"}
    assert {"SCAN_T", "SCAN_BD_MAX", "SCAN_WARPS", "SCAN_BWD", "SCAN_WARPS_BWD"} <= set(d["best"])
    # kernel time (torch.profiler) exists on a GPU only: on the CPU every row says None and nothing is ranked by it
    assert all(x["kernel_ms"] is None for x in d["rows"]) and d["best_kernel"] is None and d["default_fwd_bwd_kernel_ms"] is None


def test_scan_sass_script(tmp_path):
    """The staged 'seq' forward of the vim_fashion student's real launch (captured on the CPU, specialised as Triton's
    JIT would) compiled for sm_90 without a GPU: its step loop found in the SASS and counted."""
    import triton
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm").exists():
        pytest.skip("this Triton ships no nvdisasm")
    out = tmp_path / "sass.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "bench.studies.scan_sass", "--smoke", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    (c,) = json.loads(out.read_text())["rows"]            # both directions compile to one binary
    assert (c["kernel"], c["SCAN_SEQ_IO"], c["STAGED"]) == ("_ss_fwd_seq", "staged", True)
    assert (c["L"], c["chunks"], c["T"]) == (50, 4, 13)                        # 50 steps as 4 equal chunks of 13
    assert c["programs"] == 128 * 384 // c["BD"]                                # at the grid's batch
    (step,) = c["step_loops"]
    assert step["total"] > 20 and step.get("MUFU", 0) >= 1 and c["chunk_overhead"] > 0   # exp(dt A) in the step
    assert c["warp_instructions"] == c["programs"] * c["warps"] * 4 * (c["chunk_overhead"] + 13 * step["total"])


def test_scan_tune_ranks_by_wall_and_by_kernel_time():
    "Each estimate has its kernel-time twin where rows carry kernel times; the two rankings can disagree, and say so."
    from bench.studies.scan_tune import summary
    saved = dict(SCAN_T=16, SCAN_BD_MAX=2, SCAN_WARPS=1, SCAN_FWD="tiles", SCAN_BWD="states", SCAN_BWD_BD_MAX=8,
                 SCAN_WARPS_BWD=2, SCAN_SEQ_IO="step")
    f = dict(kind="fwd", SCAN_FWD="seq", SCAN_T=16, SCAN_BD_MAX=32, SCAN_WARPS=1, err=0.0)
    b = dict(f, kind="fwd_bwd", SCAN_BWD="seq", SCAN_BWD_BD_MAX=16, SCAN_WARPS_BWD=1)
    rows = [dict(f, SCAN_SEQ_IO="step", ms=0.10, kernel_ms=0.09), dict(f, SCAN_SEQ_IO="staged", ms=0.11, kernel_ms=0.06),
            dict(b, SCAN_SEQ_IO="step", ms=0.72, kernel_ms=0.45), dict(b, SCAN_SEQ_IO="staged", ms=0.77, kernel_ms=0.30)]
    r = summary(rows, dict(T=(16,), T_SEQ=(16,)), saved, (128, 384, 50, 16, 12))
    assert r["best"]["SCAN_SEQ_IO"] == "step" and r["best"]["fwd_bwd_ms"] == pytest.approx(0.72)
    assert r["best_kernel"]["SCAN_SEQ_IO"] == "staged"
    k = r["best_kernel"]["kernel"]
    assert (k["fwd_ms"], k["bwd_ms"], k["fwd_bwd_ms"]) == pytest.approx((0.06, 0.24, 0.30))
    assert r["default_fwd_bwd_ms"] is None                        # no row at the module's own settings
    for x in rows: x["kernel_ms"] = None                          # a CPU run: no kernel times, no kernel ranking
    assert summary(rows, dict(T=(16,), T_SEQ=(16,)), saved, (128, 384, 50, 16, 12))["best_kernel"] is None


def test_profile_fashion_step_seq_io_switch():
    "A '+staged' or '+step' backend entry gives the grid's scan shape that way of the 'seq' kernels inside its block, and only there."
    from bench.studies.profile_fashion_step import seq_io
    import cab_bench.ops.triton_scan as ts
    before, before_narrow = ts.launch_settings(50, 128 * 384), ts.launch_settings(50, 8)["SCAN_SEQ_IO"]
    for io in ("staged", "step"):
        with seq_io(io):
            assert ts.launch_settings(50, 128 * 384)["SCAN_SEQ_IO"] == io
            assert ts.launch_settings(50, 128 * 384)["SCAN_FWD"] == before["SCAN_FWD"] == "seq"
            assert ts.launch_settings(50, 8)["SCAN_SEQ_IO"] == before_narrow   # only the many-row settings change
        assert ts.launch_settings(50, 128 * 384) == before
    with pytest.raises(SystemExit, match="'\\+chunk' not allowed"):
        with seq_io("chunk"): pass
