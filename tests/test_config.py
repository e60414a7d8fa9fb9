"""One run configuration: the notebooks' parameters follow it, and bad inputs are named errors that write nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cab_bench.core import CabError
from cab_bench.experiment import DistillConfig, notebook_settings, parameters_source, run
from cab_bench.models import make_tiny_teacher
from cab_bench.runs import TASK_DEFAULTS, TrainConfig, default_settings, flat_names, prepare

ROOT = Path(__file__).resolve().parents[1]
SWEEP_EXCLUDE = ("method", "data_frac", "seed", "run_name", "analysis_samples")
# settings the main notebook used to drop (papermill warned and went on without them)
ONCE_DROPPED = ["ckpt_every", "eval_every", "weight_decay", "warmup_frac", "clip_grad", "grad_accum", "num_workers",
                "trust_remote_code", "teacher_opts", "eval_teacher"]


def parameters_cell(nb):
    cells = [c for c in json.loads((ROOT / "nbs" / nb).read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1
    return "".join(cells[0]["source"])


def test_run_distill_parameters_are_generated():
    "The main notebook's parameters cell is exactly the one generated from the configuration: every setting, its default."
    cell = parameters_cell("run_distill.ipynb")
    assert cell == parameters_source(), "regenerate the cell with cab_bench.experiment.parameters_source()"
    ns = {}
    exec(cell, ns)
    for k in ["task", *flat_names(), *ONCE_DROPPED]: assert k in ns, k
    assert DistillConfig(**notebook_settings(ns)) == DistillConfig()          # the notebook and the API agree
    assert {k: ns[k] for k in default_settings()} == default_settings()


def test_sweep_parameters_follow_the_configuration():
    "The sweep notebook's run settings are generated too (its own parameters come first)."
    cell = parameters_cell("sweep.ipynb")
    gen = parameters_source(exclude=SWEEP_EXCLUDE, overrides=dict(out_dir="runs/sweep"))
    assert cell.endswith(gen)
    ns = {}
    exec(cell, ns)
    base = notebook_settings(ns, exclude=SWEEP_EXCLUDE, own=("methods", "data_fracs", "seeds", "results_dir", "name", "baseline"))
    assert DistillConfig(**base).training == DistillConfig(out_dir="runs/sweep").training


def test_tree_holds_the_trainer_config():
    "TrainConfig is a node of the tree, not a copy; flat names reach every leaf."
    c = DistillConfig(lr=3e-3, ckpt_every=5, keep_ckpts=3, device="cpu")
    assert isinstance(c.training, TrainConfig) and (c.training.lr, c.training.ckpt_every, c.training.keep_ckpts) == (3e-3, 5, 3)
    assert c.training.out_dir == str(c.run_dir / "train")
    assert set(c.to_dict()) == {"task", *flat_names()}


def test_task_decides_the_defaults():
    "`task` alone picks teacher, student and data; given ones win."
    for task, d in TASK_DEFAULTS.items():
        c = DistillConfig(task=task)
        assert (c.teacher, c.student, c.data) == (d["teacher"], d["student"], d["data"])
    assert DistillConfig(task="language", data="text:x.txt").data == "text:x.txt"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("teachers")
    return dict(vision=make_tiny_teacher("vit", d / "vit", img_size=8, patch_size=2, in_chans=1),
                language=make_tiny_teacher("gpt2", d / "gpt2"))      # GPT-2 with a 64-token position table


def refused(cfg, *words):
    "run(cfg) raises a CabError holding every word, and leaves out_dir empty."
    with pytest.raises(CabError) as e: run(cfg)
    for w in words: assert w in str(e.value), (w, str(e.value))
    out = Path(cfg.output.out_dir)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    return str(e.value)


def test_misspelled_setting_is_named(tmp_path):
    with pytest.raises(CabError, match="unknown setting 'data_fraction' \\(did you mean 'data_frac'\\?\\)"):
        DistillConfig(data_fraction=0.01, out_dir=str(tmp_path / "runs"))
    with pytest.raises(CabError, match="did you mean 'ckpt_every'"): DistillConfig.from_dict(dict(ckpt_evry=5))
    assert not (tmp_path / "runs").exists()


def test_misspelled_method_option_is_named(tiny, tmp_path):
    cfg = DistillConfig(teacher=tiny["vision"], student="vim_test", method="cab", method_opts={"lambda_algn": 1.0},
                        max_steps=2, batch_size=8, device="cpu", out_dir=str(tmp_path / "runs"))
    refused(cfg, "cab option 'lambda_algn'", "(did you mean 'lambda_align'?)")
    with pytest.raises(CabError, match=r"method='cabb' .* \(did you mean 'cab'\?\)"):    # the method's name likewise
        run(cfg.replace(method="cabb", method_opts={}))


def test_seq_len_above_teacher_context(tiny, tmp_path):
    cfg = DistillConfig(task="language", teacher=tiny["language"], student="mamba2_lm_test", data="stdlib", data_frac=0.001,
                        method="soft_kd", seq_len=65, max_steps=2, batch_size=4, device="cpu", out_dir=str(tmp_path / "runs"))
    refused(cfg, "seq_len=65", "at most the teacher's context, 64 tokens")
    assert prepare(cfg.replace(seq_len=64))["teacher"].kind == "language"     # at the limit: fine


def test_missing_cuda_device(tiny, tmp_path):
    n = torch.cuda.device_count()
    cfg = DistillConfig(teacher=tiny["vision"], student="vim_test", device=f"cuda:{max(n, 1)}", max_steps=2, batch_size=8,
                        out_dir=str(tmp_path / "runs"))
    refused(cfg, f"device='cuda:{max(n, 1)}'")
    with pytest.raises(CabError, match="device='tpu'"): DistillConfig(device="tpu")


def papermill(tmp_path, *params):
    args = [a for k, v in params for a in ("-p", k, str(v))]
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "PYTEST_CURRENT_TEST")}
    return subprocess.run([sys.executable, "-m", "papermill", "nbs/run_distill.ipynb", str(tmp_path / "out.ipynb"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})


# `-p data_fraction 0.01` (a misspelled notebook parameter) is one of tests/test_notebooks.py's BAD cases: a CabError
# naming `data_frac` in the settings cell, nothing written, the terminal ending with that one line


@pytest.mark.slow
def test_task_language_alone_runs(tmp_path):
    "`-p task language` alone runs the language default (a short budget here), with progress lines on the terminal."
    # a short budget: 10 steps of 16 blocks, the student scored on 2 validation batches (the teacher on all of them)
    p = papermill(tmp_path, ("task", "language"), ("max_steps", 10), ("data_frac", 0.01), ("log_every", 5), ("batch_size", 16),
                  ("eval_batches", 2), ("out_dir", tmp_path / "runs"), ("analysis_samples", 0))
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = tmp_path / "runs" / "language-cab-mamba2_lm_bytes-f0.01-s0"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["teacher"], cfg["student"], cfg["data"]) == ("default:language", "mamba2_lm_bytes", "stdlib")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["metric"] == "ppl" and m["steps"] == 10 and m["student"] > 1 and m["teacher"] > 1
    assert 0 < m["student_eval"]["tokens"] <= 2 * 16 * 128 and m["data"]["n_val"] > 2 * 16      # 2 batches of all
    assert "steps/s" in p.stderr and "ETA" in p.stderr and "student mamba2_lm_bytes (cab) perplexity" in p.stderr


def test_tampered_bundled_teacher_is_refused(tmp_path):
    "A bundled teacher whose weights differ from its provenance.json is named, before anything is written."
    import shutil
    from cab_bench.models.teachers import data_dir
    d = shutil.copytree(data_dir() / "teachers" / "vit_digits", tmp_path / "vit_digits")
    with open(d / "model.safetensors", "r+b") as f:
        f.seek(-4, 2); b = f.read(4); f.seek(-4, 2); f.write(bytes(x ^ 0xFF for x in b))
    cfg = DistillConfig(teacher=f"timm:vit_tiny_patch16_224@{d / 'model.safetensors'}", max_steps=2, device="cpu",
                        out_dir=str(tmp_path / "runs"))
    refused(cfg, "teacher=", "model.safetensors has sha256", "provenance.json records", "changed or damaged")


def test_changed_content_is_not_reused(tiny, tmp_path):
    "A finished run is not reused, nor an interrupted one resumed, when the teacher's weights or the corpus changed."
    corpus = tmp_path / "corpus.txt"
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))
    corpus.write_text(text)
    cfg = DistillConfig(task="language", teacher=tiny["language"], student="mamba2_lm_test", data=f"text:{corpus}",
                        data_frac=0.2, method="soft_kd", seq_len=32, max_steps=2, batch_size=4, device="cpu",
                        eval_teacher=False, progress=False, out_dir=str(tmp_path / "runs"))
    first = run(cfg)
    assert run(cfg)["student"] == first["student"]                     # same content: reused
    corpus.write_text(text.replace("return", "yield "))                 # another text of the same size
    assert corpus.stat().st_size == len(text)
    with pytest.raises(CabError, match="other content \\(data"): run(cfg)
    corpus.write_text(text)
    assert run(cfg)["student"] == first["student"]                     # the original text again: reused


def test_process_settings_take_effect(tmp_path, monkeypatch):
    """The run settings that replace process-wide variables (data_root, doc_root, cache_dir, backend, torch_compile,
    chunk_elems) hold while the run prepares, trains and evaluates, over what the variables say; the three that only
    say where things are read do not change a run's identity."""
    import shutil
    from cab_bench.data import write_doc_sources
    from cab_bench.models.teachers import data_dir
    from cab_bench.ops.backend import _default_backend, chunk_elems_default, compile_default, pick_backend
    from cab_bench.ops.selective_scan import auto_chunk
    data = tmp_path / "data"
    shutil.copytree(data_dir() / "teachers" / "gpt2_stdlib", data / "teachers" / "gpt2_stdlib")
    docs, cache, env_cache = write_doc_sources(tmp_path / "doc"), tmp_path / "cache", tmp_path / "env_cache"
    for k, v in [("CAB_BENCH_DATA", tmp_path / "no_data"), ("CAB_BENCH_DOC_ROOT", tmp_path / "no_doc"),   # only the settings
                 ("CAB_BENCH_CACHE", env_cache), ("CAB_BENCH_COMPILE", "1"), ("CAB_BENCH_CHUNK_ELEMS", "999999")]:  # find them
        monkeypatch.setenv(k, str(v))
    import cab_bench.data
    asked, build = [], cab_bench.data.build_datasets
    def spy(*a, **kw):   # where prepare tells the data to be read and cached
        asked.append({k: str(kw[k]) for k in ("cache_dir", "doc_root")})
        return build(*a, **kw)
    monkeypatch.setattr(cab_bench.data, "build_datasets", spy)
    seen = []
    def hook(stage, step, total, loss, **kw):   # what the ops see while the run trains
        seen.append((_default_backend[-1], pick_backend("ssd_scan", None)[0], compile_default(), chunk_elems_default(),
                     auto_chunk(100, 10**6, torch.device("cpu")), data_dir()))
    cfg = DistillConfig(task="language", teacher="default:language", student="mamba2_lm_test", data="docs:python", data_frac=0.5,
                        method="soft_kd", seq_len=32, max_steps=2, batch_size=4, eval_batches=1, eval_teacher=False, device="cpu",
                        progress=False, out_dir=str(tmp_path / "runs"), data_root=str(data), doc_root=str(docs), cache_dir=str(cache),
                        backend="ref", torch_compile=False, chunk_elems=4096)
    m = run(cfg, on_step=hook)
    n_seen = len(seen)
    assert seen and set(seen) == {("ref", "ref", False, 4096, 40, data)}
    assert m["data"]["spec"] == "docs:python" and m["data"]["n_train"] > 0          # read from doc_root (the variable's folder is empty)
    assert m["backend_report"]["ssd_scan"]["path"] == "ref" and m["backend_report"]["chunked"] == dict(torch_compile=False, chunk_elems=4096)
    assert asked and all(a == dict(cache_dir=str(cache), doc_root=str(docs)) for a in asked)   # (the bundled teacher's tokenizer is
    assert not env_cache.exists()                                                  # byte-level: nothing to cache; 40_data tests the cache)
    content = json.loads((cfg.run_dir / "content.json").read_text())
    assert list(content["teacher_sha256"]) == ["model.safetensors"]                # the teacher read from data_root
    # after the run the process defaults are back
    assert (_default_backend[-1], compile_default(), chunk_elems_default(), data_dir()) == ("auto", True, 999999, tmp_path / "no_data")
    # where things are read is not what the run is: other folders (with the same content) reuse it; how it computes is
    shutil.copytree(docs, tmp_path / "doc2"); shutil.copytree(data, tmp_path / "data2")
    again = run(cfg.replace(doc_root=str(tmp_path / "doc2"), data_root=str(tmp_path / "data2"), cache_dir=str(tmp_path / "c2")), on_step=hook)
    assert again["student"] == m["student"] and len(seen) == n_seen               # reused: nothing trained
    for k, v in [("backend", "chunked"), ("torch_compile", True), ("chunk_elems", 8192)]:
        with pytest.raises(CabError, match=f"with other settings \\({k}\\)"): run(cfg.replace(**{k: v}))


@pytest.mark.parametrize("bad,words", [
    (dict(backend="fast"), ["backend='fast' is not allowed", "'chunked'"]),
    (dict(torch_compile="no"), ["torch_compile='no' is not allowed", "True, False or None"]),
    (dict(chunk_elems=0), ["chunk_elems=0 is not allowed", "a positive int"]),
    (dict(chunk_elems="4096"), ["chunk_elems='4096' is not allowed"]),
    (dict(data_root=""), ["data_root='' is not allowed", "a folder path"]),
    (dict(doc_root=7), ["doc_root=7 is not allowed"]),
    (dict(cache_dir=""), ["cache_dir='' is not allowed"]),
], ids=lambda v: "-".join(f"{k}={v!r}" for k, v in v.items()) if isinstance(v, dict) else "")
def test_bad_process_setting_is_named(tmp_path, bad, words):
    "A bad value of these settings is a named CabError before anything is written."
    with pytest.raises(CabError) as e: DistillConfig(max_steps=2, device="cpu", out_dir=str(tmp_path / "runs"), **bad)
    for w in words: assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "runs").exists()


def test_process_setting_that_cannot_run_here_is_named(tiny, tmp_path):
    "Settings that are well-formed but cannot serve this run are named by the validation pass, with nothing written."
    base = DistillConfig(teacher=tiny["vision"], student="vim_test", max_steps=2, batch_size=8, device="cpu", out_dir=str(tmp_path / "runs"))
    if not torch.cuda.is_available():
        refused(base.replace(backend="cuda"), "backend='cuda' cannot run", "not on a CUDA device")
    refused(base.replace(teacher="default:vision", data_root=str(tmp_path / "empty")), "teacher='default:vision'",
            f"no bundled teacher at {tmp_path / 'empty'}")
    refused(base.replace(task="language", teacher=tiny["language"], student="mamba2_lm_test", data="docs", seq_len=32,
                         doc_root=str(tmp_path / "no_docs")), "data='docs'")
