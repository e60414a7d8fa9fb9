"""Vision methods on the digits default at equal budget: train a small ViT teacher on digits, then distill Vim students.

    python -m bench.studies.digits_methods --out bench/results/digits_methods.json [--methods vanilla soft_kd cab] [--seeds 0 1 2]

The teacher (timm ViT, 8x8 single-channel input, patch 2, D=64, 4 layers) is trained here from a fixed seed and
saved as a local checkpoint (safetensors + the JSON sidecar `load_teacher` reads); every student run goes through
`cab_bench.experiment.run` with the same step budget, batch, learning rate and data fraction. Writes every run's
metrics and a mean/std summary per method.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cab_bench.core import seed_everything
from cab_bench.data import build_datasets
from cab_bench.experiment import DistillConfig, evaluate_logits, run

TEACHER = "vit_tiny_patch16_224"
TEACHER_KW = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, num_classes=10)


def train_teacher(path: Path, steps=1500, seed=0):
    "Train the ViT teacher on the digits training split; save weights + sidecar; return its spec and accuracy."
    import timm
    from safetensors.torch import save_file
    seed_everything(seed)
    model = timm.create_model(TEACHER, pretrained=False, **TEACHER_KW)
    b = build_datasets("digits", "vision", channels=1, img_size=8)
    dl = torch.utils.data.DataLoader(b.train, batch_size=64, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.1)
    step = 0
    while step < steps:
        for x, y in dl:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1
            if step == steps: break
    model.eval()
    acc = evaluate_logits(model, b.val, "vision")["top1"]
    save_file(model.state_dict(), str(path))
    Path(str(path) + ".json").write_text(json.dumps(dict(model=TEACHER, model_kwargs=TEACHER_KW)))
    return f"timm:{TEACHER}@{path}", acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", nargs="+", default=["vanilla", "soft_kd", "cab"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--data_frac", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--teacher_steps", type=int, default=1500)
    a = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        spec, tacc = train_teacher(Path(d) / "vit_digits.safetensors", a.teacher_steps)
        print(f"teacher top-1 {tacc:.4f} ({time.time() - t0:.0f}s)", flush=True)
        runs = []
        for method in a.methods:
            for seed in a.seeds:
                cfg = DistillConfig(method=method, teacher=spec, student="vim_digits", data="digits", data_frac=a.data_frac,
                                    max_steps=a.steps, batch_size=64, lr=2e-3, seed=seed, device="cpu",
                                    out_dir=str(Path(d) / "runs"), eval_teacher=False)
                m = run(cfg)
                runs.append(dict(method=method, seed=seed, top1=m["student"], wall_time=m["wall_time"],
                                 n_train=m["data"]["n_train"], subset_sha256=m["data"]["subset_sha256"]))
                print(f"{method:8s} seed {seed}: top-1 {m['student']:.4f} ({m['wall_time']:.0f}s)", flush=True)
    summary = {}
    for method in a.methods:
        accs = [r["top1"] for r in runs if r["method"] == method]
        summary[method] = dict(mean=statistics.mean(accs), std=statistics.stdev(accs) if len(accs) > 1 else 0.0, n=len(accs))
    out = dict(teacher=dict(model=TEACHER, kwargs=TEACHER_KW, top1=tacc, steps=a.teacher_steps),
               settings=dict(data_frac=a.data_frac, steps=a.steps, batch_size=64, lr=2e-3, student="vim_digits"),
               runs=runs, summary=summary, total_time_s=time.time() - t0, torch=torch.__version__)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
