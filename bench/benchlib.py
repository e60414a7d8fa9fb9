"""Shared pieces of the benchmark suite: environment record, timing, OOM handling, deadlines, JSON output.

Every timing is a median over repeats after warm-up: CUDA events on a GPU (one synchronisation after the last repeat),
`time.perf_counter` on a CPU. Memory is the caching allocator's peak (`torch.cuda.max_memory_allocated`) over the
timed repeats, next to what was allocated before them (`base`); CPU runs record no memory.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = ("torch", "triton", "timm", "transformers", "accelerate", "mamba-ssm", "causal-conv1d", "numpy", "cab_bench")
MB, GB = 2**20, 2**30


# ---------------------------------------------------------------------------------------------------------- environment
def _version(pkg:str)->str|None:
    try: return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        if pkg == "cab_bench":                                   # not installed: the checkout's own version
            import cab_bench
            return getattr(cab_bench, "__version__", None)
        return None


def git_commit()->dict:
    "The checkout's commit (`CAB_BENCH_COMMIT` overrides; 'unknown' without git history) and whether tracked code differs."
    def git(*a):
        try: return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError): return None
    r = git("rev-parse", "--verify", "HEAD")
    sha = r.stdout.strip() if r is not None and r.returncode == 0 else ""
    commit = os.environ.get("CAB_BENCH_COMMIT") or (sha if re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown")
    st = git("status", "--porcelain", "--", "cab_bench", "bench") if sha else None
    dirty = None if st is None or st.returncode else bool(st.stdout.strip())
    return dict(commit=commit, dirty=dirty, source_hash=source_hash())


def source_hash()->str:
    "sha256 (12 hex) of the library's and the suite's .py files: identifies the code even where git is missing."
    h = hashlib.sha256()
    for f in sorted([*ROOT.glob("cab_bench/**/*.py"), *ROOT.glob("bench/**/*.py")]):
        h.update(str(f.relative_to(ROOT)).encode()); h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _driver()->str|None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError): return None


def _cpu_name()->str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def environment()->dict:
    "Machine, library versions, commit and the ops' backend report, recorded with every result file."
    from cab_bench.ops import backend_report
    cuda = torch.cuda.is_available()
    gpu = None
    if cuda:
        p = torch.cuda.get_device_properties(0)
        gpu = dict(name=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / GB, 1),
                   multiprocessors=p.multi_processor_count, count=torch.cuda.device_count(), driver=_driver())
    rep = backend_report()
    return dict(timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                device=gpu["name"] if gpu else "cpu", gpu=gpu, cuda_runtime=torch.version.cuda,
                cpu=_cpu_name(), cpu_count=os.cpu_count(), python=platform.python_version(), platform=platform.platform(),
                torch=torch.__version__, versions={p: _version(p) for p in PACKAGES},
                torch_threads=torch.get_num_threads(), matmul_precision=torch.get_float32_matmul_precision(), **git_commit(),
                backend_report={k: v for k, v in rep.items() if k not in ("versions", "device")})


# ------------------------------------------------------------------------------------------------------------- timing
_ON_CPU = [False]


def configure(smoke:bool):
    "The smoke configuration runs on the CPU (also on a GPU machine), single-threaded: its tiny ops only lose to threads."
    _ON_CPU[0] = smoke
    if smoke: torch.set_num_threads(1)


def device()->torch.device:
    "Where the suite runs: the GPU when there is one, except in the smoke configuration."
    return torch.device("cuda" if torch.cuda.is_available() and not _ON_CPU[0] else "cpu")


def sync(dev:torch.device):
    if dev.type == "cuda": torch.cuda.synchronize(dev)


def autocast(dev:torch.device):
    "bf16 autocast on a GPU (as the trainer runs), nothing on a CPU (as the trainer's 'auto' precision)."
    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)


def measure(
    fn,                       # the call to time; returns nothing useful
    dev:torch.device,
    warmup:int=2,             # calls before timing (the first compiles / autotunes / allocates)
    min_reps:int=3, max_reps:int=50,
    budget_s:float=1.0,       # aim for this much timed work (repeats = budget / one call, clamped)
    slow_s:float=1.0,         # a warm-up call after the first that takes longer than this ends the warm-up
    cap_s:float|None=None,    # never plan repeats beyond this many seconds (the section's time left); may drop below min_reps
)->dict:                      # ms (median), ms_min, ms_max, reps, peak_bytes, base_bytes (None on a CPU)
    "Median time of `fn()` over repeats after warm-up, with the allocator's peak over the repeats."
    t_call = None
    for i in range(max(1, warmup)):
        t0 = time.perf_counter(); fn(); sync(dev); t_call = time.perf_counter() - t0
        if i >= 1 and t_call > slow_s: break
    reps = max(min_reps, min(max_reps, int(budget_s / max(t_call, 1e-6))))
    if cap_s is not None: reps = max(1, min(reps, int(cap_s / max(t_call, 1e-6))))
    cuda = dev.type == "cuda"
    if cuda:
        gc.collect(); torch.cuda.reset_peak_memory_stats(dev); base = torch.cuda.memory_allocated(dev)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for s, e in ev: s.record(); fn(); e.record()
        torch.cuda.synchronize(dev)
        times = [s.elapsed_time(e) for s, e in ev]
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        times, base, peak = [], None, None
        for _ in range(reps):
            t0 = time.perf_counter(); fn(); times.append((time.perf_counter() - t0) * 1e3)
    return dict(ms=statistics.median(times), ms_min=min(times), ms_max=max(times), reps=reps, peak_bytes=peak, base_bytes=base)


def time_once(fn, dev:torch.device)->float:
    "Milliseconds of one call (CUDA events on a GPU)."
    if dev.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(dev)
        return s.elapsed_time(e)
    t0 = time.perf_counter(); fn(); return (time.perf_counter() - t0) * 1e3


def profile_top(fn, dev:torch.device, steps:int=3, top:int=30)->dict:
    """Where the time of `fn()` goes: torch.profiler over `steps` calls, per call.

    `kernels` lists the GPU kernels (events with device time and no CPU time of their own), the most device time
    first, with their share of the summed kernel time; `ops` the operators and autograd functions that contain them
    (their device time includes their kernels, so their rows overlap)."""
    from torch.profiler import profile, ProfilerActivity
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps): fn()
        sync(dev)
    ev = list(prof.key_averages())
    kern = [e for e in ev if e.device_time_total > 0 and e.cpu_time_total == 0]
    total = sum(e.device_time_total for e in kern) / steps / 1e3
    row = lambda e: dict(name=e.key[:140], device_ms=e.device_time_total / steps / 1e3, calls=e.count / steps)
    kernels = [dict(row(e), share=(e.device_time_total / steps / 1e3) / total if total else None)
               for e in sorted(kern, key=lambda e: -e.device_time_total)[:top]]
    ops = [dict(row(e), cpu_ms=e.cpu_time_total / steps / 1e3)
           for e in sorted((e for e in ev if e.cpu_time_total > 0), key=lambda e: -e.device_time_total)[:top]]
    return dict(steps=steps, kernel_ms=total, kernels=kernels, ops=ops)


def copy_bandwidth(dev:torch.device, nbytes:int)->dict:
    "Device-to-device copy bandwidth: `dst.copy_(src)` of `nbytes`, counting the read and the write (2 * nbytes)."
    buf = [torch.randn(nbytes // 4, device=dev)]
    buf.append(torch.empty_like(buf[0]))
    r = measure(lambda: buf[1].copy_(buf[0]), dev, warmup=3, min_reps=10, max_reps=100, budget_s=0.5)
    buf.clear(); free_memory()
    return dict(bytes=nbytes, ms=r["ms"], reps=r["reps"], gb_per_s=2 * nbytes / (r["ms"] / 1e3) / 1e9)


# ----------------------------------------------------------------------------------------------------- OOM and time caps
def is_oom(e:BaseException)->bool:
    "An allocation failure of the GPU (the allocator's, or cuBLAS/cuDNN failing to get workspace)."
    if isinstance(e, torch.cuda.OutOfMemoryError): return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg.lower() or "ALLOC_FAILED" in msg)


def free_memory():
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


class Deadline:
    "A section's wall-clock cap."
    def __init__(self, seconds:float): self.t0, self.seconds = time.monotonic(), float(seconds)
    def elapsed(self)->float: return time.monotonic() - self.t0
    def left(self)->float: return self.seconds - self.elapsed()
    def allows(self, estimate_s:float)->bool: return estimate_s <= self.left()


def estimate(history:dict, L:int, calls:float)->float:
    "Seconds a point at length L may take: `calls` times the nearest measured point's time, scaled up linearly in L."
    if not history: return 0.0
    below = [l for l in history if l <= L]
    L0 = max(below) if below else min(history)
    return calls * history[L0] * max(1.0, L / L0)


class Guard:
    "Runs one benchmark point: returns its result, or records why it has none (OOM, error) and frees memory."
    def __init__(self, strict:bool): self.strict = strict
    def __call__(self, fn):
        try: return fn(), None
        except Exception as e:                       # the exception (and its frames' tensors) dies with this block
            if is_oom(e): why = "oom"
            elif self.strict: raise
            else: why = f"error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        free_memory()
        return None, why


# ---------------------------------------------------------------------------------------------------------------- JSON
def clean(x):
    "JSON-safe copy: non-finite floats become None, tuples lists, other objects their str."
    if isinstance(x, float): return x if math.isfinite(x) else None
    if isinstance(x, dict): return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)): return [clean(v) for v in x]
    if x is None or isinstance(x, (bool, int, str)): return x
    if isinstance(x, torch.dtype): return str(x).replace("torch.", "")
    return str(x)


def write_json(path, obj):
    "Atomic write (a killed run leaves the previous complete file, never half a file)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


class SectionLog:
    "A section's result file, rewritten after every point so that a killed run keeps what it measured."
    def __init__(self, path, section:str, env:dict, settings:dict, smoke:bool, cap_s:float):
        self.path = Path(path)
        self.data = dict(section=section, status="running", smoke=smoke, env=env, settings=settings, cap_s=cap_s,
                         wall_s=None, results=[], skipped=[], notes=[])
        self.t0 = time.monotonic()
        self.save()
    def add(self, row:dict): self.data["results"].append(row); self.save()
    def skip(self, why:str, **where): self.data["skipped"].append(dict(where, why=why)); self.save()
    def note(self, text:str): self.data["notes"].append(text); self.save()
    def set(self, **kw): self.data.update(kw); self.save()
    def save(self):
        self.data["wall_s"] = round(time.monotonic() - self.t0, 2)
        write_json(self.path, self.data)
    def finish(self, capped:bool=False):
        self.data["status"] = "partial (time cap)" if capped else "complete"
        self.save()
        return self.data


def log(msg:str):
    print(msg, flush=True)
