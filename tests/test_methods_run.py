"""Every registered method runs end to end through `cab_bench.experiment.run` on tiny vision and language configs."""
import pytest

from cab_bench.distill import method_names
from cab_bench.experiment import DistillConfig, run
from cab_bench.models import make_tiny_teacher

LANGUAGE_ONLY = {"hedgemamba", "hedgemamba_one_step"}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    d = tmp_path_factory.mktemp("teachers")
    return dict(vision=make_tiny_teacher("deit", d / "deit"), language=make_tiny_teacher("gpt2", d / "gpt2"))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["vision", "language"])
@pytest.mark.parametrize("method", method_names())
def test_method_runs(method, task, teachers, tmp_path):
    if task == "vision" and method in LANGUAGE_ONLY:
        pytest.skip("a language-only method")
    # two validation batches per evaluation: the whole validation split (3,813 blocks of 32 tokens for stdlib) took
    # 90% of a language case's time and is not what this test checks
    common = dict(method=method, teacher=teachers[task], max_steps=3, batch_size=8, out_dir=str(tmp_path), device="cpu",
                  eval_teacher=False, eval_batches=2)
    cfg = (DistillConfig(task="vision", student="vim_test", data="digits", data_frac=0.1, **common) if task == "vision" else
           DistillConfig(task="language", student="mamba2_lm_test", data="stdlib", data_frac=0.002, seq_len=32,
                         # per-head matrix matching (MOHAWK) needs as many student heads as teacher heads (2)
                         student_opts=dict(mixer_kwargs=dict(headdim=32)), **common))
    m = run(cfg)
    assert m["steps"] == 3 and m["method"] == method
    assert m["student"] is not None and m["student"] == m["student"]      # a number, not NaN
    assert (tmp_path / cfg.run_name / "metrics.json").exists()
    e = m["student_eval"]                                                 # what it evaluated: two batches of 8
    assert 0 < (e["count"] if task == "vision" else e["tokens"]) <= 2 * 8 * (1 if task == "vision" else cfg.seq_len)
