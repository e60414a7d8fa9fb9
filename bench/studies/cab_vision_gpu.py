"""A short CAB run on the GPU: DeiT-Tiny-size teacher -> Vim-Tiny-size student (random init), 224 px, bf16.

    python -m bench.studies.cab_vision_gpu --out bench/results/cab_vision_h200.json [--steps 20] [--batch 128]

First runs the real trainer (`cab_bench.train.train`) for a few steps on random images (checks the whole path on the
GPU with bf16 autocast), then times the trainer's optimizer step (`train_step`, through the suite's `StageStep`) of
the same distill module (CUDA events, after warm-up) for images/s and the allocator's peak memory. Writes JSON with
the environment.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..benchlib import environment
from ..bench_step import StageStep
from cab_bench.core import seed_everything
from cab_bench.distill import build_method
from cab_bench.models import create_student, load_teacher
from cab_bench.train import TrainConfig, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--smoke", action="store_true", help="tiny models on CPU: checks the script")
    a = ap.parse_args(argv)
    seed_everything(0)
    dev = "cuda" if torch.cuda.is_available() and not a.smoke else "cpu"
    if a.smoke:
        teacher = load_teacher("timm:deit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
        student = create_student("vim_test", img_size=32, patch_size=8, num_classes=10)
        size, batch, steps = 32, 8, 3
    else:
        teacher = load_teacher("timm:deit_tiny_patch16_224", num_classes=1000)   # DeiT-Tiny size, random weights
        student = create_student("vim_tiny_patch16_224", num_classes=1000)
        size, batch, steps = 224, a.batch, a.steps
    method = build_method("cab", teacher, student)
    n = batch * (steps + 2)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 3, size, size), torch.randint(0, 1000 if not a.smoke else 10, (n,)))
    with tempfile.TemporaryDirectory() as d:
        res = train(method.module, method.stages, ds, None, TrainConfig(max_steps=steps, batch_size=batch, device=dev,
                    precision="auto", out_dir=d, log_every=max(1, steps // 4), progress=False))
    losses = res.stage_losses
    # the trainer's optimizer step of the same module (its one stage), timed
    module = method.module.to(dev)
    st = StageStep(method, method.stages[0].name, torch.device(dev))
    x = torch.randn(batch, 3, size, size, device=dev); y = torch.randint(0, student.num_classes, (batch,), device=dev)
    def step(): st((x, y))
    for _ in range(3): step()
    times = []
    if dev == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    for _ in range(max(3, steps // 2)):
        if dev == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); step(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e) / 1e3)
        else:
            t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    out = dict(env=environment(), smoke=a.smoke, teacher=("tiny deit (smoke)" if a.smoke else "deit_tiny_patch16_224 (random init)"), student=("vim_test (smoke)" if a.smoke else "vim_tiny_patch16_224"),
               img_size=size, batch=batch, trainer_steps=res.steps, trainer_stage_losses=losses, trainer_device=res.device,
               step_ms=sec * 1e3, images_per_s=batch / sec,
               peak_mem_gb=torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None,
               params_student=sum(p.numel() for p in student.parameters()),
               params_bridge=sum(p.numel() for n_, p in module.named_parameters() if "bridge" in n_))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: v for k, v in out.items() if k != "env"}, indent=1, default=str))


if __name__ == "__main__":
    main()
