"""Real assets, vision: train the Fashion-MNIST teacher (`default:fashion`) on a GPU, then a short CAB run into `vim_fashion`.

    python -m bench.studies.real_assets_vision                      # on a GPU: about 4 min of teacher training + a short CAB run
    python -m bench.studies.real_assets_vision --data <idx dir> --out <dir>/teachers/vit_fashion --epochs 50 --time_budget 240
    python -m bench.studies.real_assets_vision --tiny --data <dir> --out <tmp>/teachers/vit_fashion --runs <tmp>/runs   # CPU check

1. `cab_bench.pretrain.pretrain_fashion_teacher` trains the DeiT-Tiny-like ViT (28 px, patch 4) on the 60,000 training
   images (bf16 autocast on CUDA) and writes `model.safetensors` (bf16) + sidecar + `provenance.json` to `--out`; with
   `--time_budget` the run is shortened (schedule re-planned) when the planned epochs would not fit.
2. `--out` must end in `teachers/vit_fashion` (the layout `default:fashion` reads); `$CAB_BENCH_DATA` is pointed at the folder
   above `teachers/`, so the distillation loads the teacher as `default:fashion` through the normal experiment API.
3. `cab_bench.experiment.run`: CAB, `default:fashion` -> `vim_fashion`, `--data_frac` (1 %: 600 images, 60 per class) of
   the training split with the crop + flip augmentation, scored on the 10,000 test images.

Prints and writes (`--json`) one summary: the teacher's test top-1, training time and epochs, the CAB run's student and
teacher top-1, steps and times, and the total wall time.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from cab_bench.core import CabError  # noqa: E402

TINY_TEACHER = dict(embed_dim=32, depth=2, num_heads=2)          # --tiny: a CPU-sized teacher and student
TINY_STUDENT = dict(embed_dim=32, depth=2, d_state=8)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="folder of the four Fashion-MNIST idx files (default: the Debian package's)")
    p.add_argument("--out", default=str(ROOT / "data" / "teachers" / "vit_fashion"), help="teacher folder, ending in teachers/vit_fashion")
    p.add_argument("--epochs", type=int, default=50, help="planned teacher epochs")
    p.add_argument("--time_budget", type=float, default=240.0, help="teacher training wall-time budget in seconds (0: none)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--skip_teacher", action="store_true", help="reuse the teacher already in --out")
    p.add_argument("--distill_steps", type=int, default=300)
    p.add_argument("--distill_batch", type=int, default=128)
    p.add_argument("--data_frac", type=float, default=0.01)
    p.add_argument("--runs", default=str(ROOT / "runs" / "real_assets"), help="out_dir of the distillation run")
    p.add_argument("--json", default=None, help="write the summary here (default: <runs>/real_assets_vision.json)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="tiny teacher and student, a few steps: checks the script on a CPU")
    return p.parse_args(argv)


def main(argv=None)->dict:
    a = parse(argv)
    t0 = time.time()
    out = Path(a.out).expanduser().resolve()
    if out.parts[-2:] != ("teachers", "vit_fashion"):
        raise CabError(f"--out={a.out!r}: must end in teachers/vit_fashion (the layout default:fashion reads)")
    for name in ("epochs", "batch_size", "distill_steps", "distill_batch"):
        if getattr(a, name) < 1: raise CabError(f"--{name}={getattr(a, name)}: must be a positive int")
    import torch
    from cab_bench.pretrain import pretrain_fashion_teacher
    from cab_bench.experiment import DistillConfig, run
    os.environ["CAB_BENCH_DATA"] = str(out.parent.parent)   # default:fashion -> <out>/model.safetensors
    if a.skip_teacher and (out / "provenance.json").is_file():
        prov = json.loads((out / "provenance.json").read_text())
    else:
        prov = pretrain_fashion_teacher(out, data=a.data, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                        time_budget_s=a.time_budget or None, device=a.device,
                                        model_kwargs=TINY_TEACHER if a.tiny else None, warmup_epochs=1 if a.tiny else 3,
                                        progress=not a.tiny)
    teacher = dict(test_top1=prov["metrics"]["test_top1"], train_time_s=prov.get("train_time_s"), epochs=prov["training"],
                   params=prov["params"], size_bytes=(out / "model.safetensors").stat().st_size,
                   weights_sha256=prov["weights_sha256"]["model.safetensors"], device=prov.get("device_name"))
    print(json.dumps(dict(teacher=teacher), indent=1), flush=True)
    sha = teacher["weights_sha256"][:8]
    cfg = DistillConfig(task="vision", method="cab", teacher="default:fashion", student="vim_fashion",
                        data=f"fashion_mnist:{a.data}" if a.data else "fashion_mnist", data_frac=a.data_frac,
                        max_steps=a.distill_steps, batch_size=a.distill_batch, lr=1e-3, device=a.device, out_dir=str(a.runs),
                        run_name=f"fashion-cab-vim_fashion-f{a.data_frac:g}-t{sha}" + ("-tiny" if a.tiny else ""),
                        student_opts=TINY_STUDENT if a.tiny else {})
    t1 = time.time()
    m = run(cfg)
    distill = dict(run_dir=m["run_dir"], student_top1=m["student"], teacher_top1=m["teacher"], steps=m["steps"],
                   n_train=m["data"]["n_train"], wall_time_s=m["wall_time"], run_time_s=time.time() - t1, device=m["device"])
    summary = dict(study="real_assets_vision", teacher=teacher, distill=distill, total_time_s=time.time() - t0,
                   torch=torch.__version__, cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    path = Path(a.json) if a.json else Path(a.runs) / "real_assets_vision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
