"""Instructions a step of the 'seq' selective-scan kernels costs, read from their machine code for an H100/H200 (sm_90).

No GPU is needed. A Vim student (the replication grid's vim_fashion, Vim-Tiny) runs one forward and backward on the CPU with the
Triton scan's kernels replaced by recorders, so each launch's real arguments are captured: the Vim mixer's tensors
with their strides, dtypes and alignments, and the launch settings the dispatcher chose. Triton's own binder turns
them into the specialization its JIT would compile on the GPU (integers equal to 1 become constants, pointers and
integers divisible by 16 are marked so), and Triton compiles that for sm_90 on this machine; the `nvdisasm` that ships
with its NVIDIA backend turns the binary into SASS. This finds the kernel's loops in the SASS (a branch back to an
earlier label), counts the instructions of each step loop by kind (global loads and stores, shuffles, barriers,
special functions), and multiplies them out to warp-instructions per call at the student's batch (the grid's
vim_fashion at 128, and Vim-Tiny at ENV.md's 64):

    programs x warps x chunks x (chunk overhead + steps a chunk x instructions a step)

for each way a step gets its values (`SCAN_SEQ_IO`: 'step' or 'staged'), and for 'step' also at the chunking before
equal chunks (50 steps as 4 chunks of 16) and at the settings the CAB step was profiled with on an H200 (32 channels
and 1 warp a program both ways; bench/results/profile_fashion_step_seq_h200.json: 0.068 ms forward, 0.39 ms backward
a call). An H200 issues at most about 1.05 T warp-instructions a second (132 SMs x 4 schedulers x 1.98 GHz), so the
profiled calls' counts say how much of their time issue alone explains. The counts are a proxy for time, not a time:
`bench.studies.scan_tune` measures that on a GPU. The Triton causal conv's launches (`ops.triton_conv`) are counted
the same way (one tile a program, no loops).

    python -m bench.studies.scan_sass --out bench/results/scan_sass_sm90.json
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.benchlib import environment, write_json

STUDENTS = {"vim_fashion": 128, "vim_tiny_patch16_224": 64}   # student: the batch each is timed at (the grid's; ENV.md's)
KINDS = ("LDG", "STG", "LDS", "STS", "SHFL", "BAR", "MUFU", "LDL", "STL", "ATOMG", "RED")
# (label, SCAN_SEQ_IO, overrides of the 'seq' settings SCAN_WIDE applies, the chunk length forced, or None: the
# dispatcher's equal chunks)
CASES = [("step, profiled settings (before)", "step", dict(SCAN_BD_MAX=32, SCAN_WARPS=1, SCAN_BWD_BD_MAX=32, SCAN_WARPS_BWD=1), 16),
         ("step, chunks of 16 (before)", "step", {}, 16), ("step", "step", {}, None), ("staged", "staged", {}, None),
         ("staged, forward 1 warp", "staged", dict(SCAN_WARPS=1), None),
         ("staged, backward 2 warps", "staged", dict(SCAN_WARPS_BWD=2), None)]


def tool(name:str)->str:
    "A binary of Triton's NVIDIA backend (nvdisasm, cuobjdump), or SystemExit when this Triton has none."
    import triton
    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not p.exists(): raise SystemExit(f"scan_sass: this Triton ships no {name} ({p})")
    return str(p)


class Recorder:
    "Stands in for a JIT kernel: `rec[grid](*args, **kwargs)` records the launch instead of running it."
    def __init__(self, fn, calls:list): self.fn, self.calls = fn, calls
    def __getitem__(self, grid): return lambda *args, **kwargs: self.calls.append((self.fn, tuple(grid), args, kwargs))


def capture(io:str, overrides:dict, student:str="vim_fashion", batch:int=2, seed:int=0, conv:bool=False)->list:
    """The 'seq' kernel launches (or with `conv`, the Triton causal conv's) of one forward + backward of `student` under
    bf16 autocast, with `SCAN_SEQ_IO = io` and `overrides` on SCAN_WIDE's settings: a list of (kernel, grid, args,
    kwargs), one per distinct argument layout."""
    import torch
    import cab_bench.ops.triton_conv as tc
    import cab_bench.ops.triton_scan as ts
    from cab_bench.models import create_student
    from cab_bench.ops import use_backend
    calls, conv_calls, saved = [], [], {k: getattr(ts, k) for k in ("_ss_fwd_seq", "_ss_bwd_seq", "SCAN_WIDE", "SCAN_WIDE_ROWS")}
    saved_conv = {k: getattr(tc, k) for k in ("_conv_fwd", "_conv_bwd_g", "_conv_bwd_dx")}
    env = os.environ.get("TRITON_INTERPRET")
    try:
        ts._ss_fwd_seq, ts._ss_bwd_seq = Recorder(saved["_ss_fwd_seq"], calls), Recorder(saved["_ss_bwd_seq"], calls)
        for k, v in saved_conv.items(): setattr(tc, k, Recorder(v, conv_calls))
        ts.SCAN_WIDE = dict(saved["SCAN_WIDE"], SCAN_SEQ_IO=io, **overrides)
        ts.SCAN_WIDE_ROWS = 1                 # the small captured batch takes the grid batch's settings
        os.environ["TRITON_INTERPRET"] = "1"  # lets the dispatcher take the Triton path on a CPU; the kernels stay JIT ones
        torch.manual_seed(seed)
        model = create_student(student)
        with use_backend("triton"), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(batch, model.patch_embed.in_channels, model.img_size, model.img_size))
        out.logits.float().sum().backward()
    finally:
        for k, v in saved.items(): setattr(ts, k, v)
        for k, v in saved_conv.items(): setattr(tc, k, v)
        if env is None: os.environ.pop("TRITON_INTERPRET", None)
        else: os.environ["TRITON_INTERPRET"] = env
    seen, unique = set(), []
    for fn, grid, args, kwargs in (conv_calls if conv else calls):      # every layer launches the same few: keep one of each argument layout
        key = (fn.__name__, grid) + tuple((a.dtype, a.stride(), a.data_ptr() % 16) if hasattr(a, "stride") else a for a in args)
        if key not in seen: seen.add(key); unique.append((fn, grid, args, kwargs))
    return unique


def compile_call(fn, args:tuple, kwargs:dict):
    "fn compiled for sm_90 with the specialization Triton's JIT gives these arguments: Triton's CompiledKernel."
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    backend = make_backend(GPUTarget("cuda", 90, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                          options=options.__dict__)


def sass_loops(cubin:bytes)->tuple[list[str], list[tuple[int, int]]]:
    "The SASS instructions of a cubin and its loops as (first, last) instruction indices (a branch back to a label)."
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin); f.flush()
        text = subprocess.run([tool("nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout
    ins, labels, loops = [], {}, []
    for line in text.splitlines():
        m = re.match(r"\s*(\.L_x_\d+):", line)
        if m: labels[m.group(1)] = len(ins); continue
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(.*?)\s*;", line)
        if m: ins.append(m.group(1))
    for i, s in enumerate(ins):
        m = re.search(r"\bBRA\b.*?(\.L_x_\d+)", s)
        if m and m.group(1) in labels and labels[m.group(1)] < i: loops.append((labels[m.group(1)], i))
    return ins, loops


def mix(ins:list[str])->dict:
    "Instruction count by kind (the opcode before its first '.', predicates dropped), and the total."
    c = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", s).split()[0].split(".")[0] for s in ins)
    return dict(total=len(ins), **{k: c[k] for k in KINDS if c[k]})


def resources(cubin:bytes)->dict:
    "Registers and stack bytes a thread, from cuobjdump."
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin); f.flush()
        use = subprocess.run([tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)", use)
    return dict(registers=int(m.group(1)), stack_bytes=int(m.group(2))) if m else {}


def analyse(fn, grid, args, kwargs, T_forced:int|None=None, batch:int=2, at_batch:int=128)->dict:
    """One launch (captured at `batch`): its step loops' instruction mix, the chunk loop's overhead, registers and
    spills, and warp-instructions per call at `at_batch`. `T_forced` recompiles it at that chunk length (and chunks)."""
    import triton
    names = [p.name for p in fn.params]
    args, kwargs = list(args), dict(kwargs)
    L = args[names.index("L")]
    if T_forced is not None:
        kwargs["T"], kwargs["TP"] = T_forced, triton.next_power_of_2(T_forced)
        args[names.index("NCH")] = triton.cdiv(L, T_forced)
    T, nch, warps = kwargs["T"], args[names.index("NCH")], kwargs.get("num_warps", 4)
    t0 = time.time()
    k = compile_call(fn, tuple(args), kwargs)
    ins, loops = sass_loops(k.asm["cubin"])
    inner = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    outer = [lp for lp in loops if any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    want = 1 if fn.__name__ == "_ss_fwd_seq" else 2
    if len(inner) != want or len(outer) != 1:
        raise RuntimeError(f"scan_sass: {fn.__name__}: expected {want} step loops in one chunk loop, found loops {loops}")
    steps = [mix(ins[a:b + 1]) for a, b in inner]
    overhead = outer[0][1] - outer[0][0] + 1 - sum(s["total"] for s in steps)
    programs = grid[0] * at_batch // batch * (grid[1] if len(grid) > 1 else 1)
    return dict(kernel=fn.__name__, L=L, T=T, chunks=nch, BD=kwargs["BD"], warps=warps, STAGED=kwargs.get("STAGED"),
                step_loops=steps, chunk_overhead=overhead, **resources(k.asm["cubin"]), programs=programs, hash=k.hash,
                warp_instructions=programs * warps * nch * (overhead + T * sum(s["total"] for s in steps)),
                compile_s=round(time.time() - t0, 2))


def analyse_conv(fn, grid, args, kwargs, batch:int=2, at_batch:int=128)->dict:
    "A Triton conv launch (no loops: one tile a program): its instructions, registers and warp-instructions a call."
    k = compile_call(fn, args, kwargs)
    ins, _ = sass_loops(k.asm["cubin"])
    programs = grid[0] * at_batch // batch * grid[1] * grid[2]
    warps = kwargs.get("num_warps", 4)
    return dict(kernel=fn.__name__, in_strides=list(args[1 if fn.__name__ == "_conv_bwd_dx" else 0].stride()),
                BD=kwargs["BD"], BL=kwargs["BL"], warps=warps,
                program=mix(ins), **resources(k.asm["cubin"]), programs=programs,
                warp_instructions=programs * warps * len(ins), hash=k.hash)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated, of {', '.join(STUDENTS)}")
    ap.add_argument("--smoke", action="store_true", help="the staged forward of vim_fashion only (a CPU test)")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if c[0] == "staged"] if a.smoke else CASES
    students = ["vim_fashion"] if a.smoke else a.students.split(",")
    bad = [s for s in students if s not in STUDENTS]
    if bad: raise SystemExit(f"scan_sass: --students {bad} not allowed; expected some of {', '.join(STUDENTS)}")
    t0, rows = time.time(), []
    for student, label, io, over, T in ((s, *c) for s in students for c in cases):
        for fn, grid, args, kwargs in capture(io, over, student):
            if a.smoke and fn.__name__ != "_ss_fwd_seq": continue
            r = dict(student=student, batch=STUDENTS[student], case=label, SCAN_SEQ_IO=io,
                     **analyse(fn, grid, args, kwargs, T, at_batch=STUDENTS[student]))
            if any(q["student"] == student and q["case"] == label and q["hash"] == r["hash"] for q in rows): continue
            rows.append(r)                                             # (both directions compile to one binary)
            print(f"{student:20s} {label:28s} {r['kernel']:12s} {r['chunks']}x{r['T']} steps, BD {r['BD']}, {r['warps']} warps, "
                  f"step loops {[s['total'] for s in r['step_loops']]}, chunk overhead {r['chunk_overhead']}, "
                  f"{r.get('registers')} regs, {r.get('stack_bytes')} B stack: {r['warp_instructions'] / 1e6:.1f} M warp-instr a call",
                  flush=True)
    convs = []
    for student in ([] if a.smoke else students):     # the Triton causal conv at the student's own layout
        for fn, grid, args, kwargs in capture("step", {}, student, conv=True):
            r = dict(student=student, batch=STUDENTS[student], **analyse_conv(fn, grid, args, kwargs, at_batch=STUDENTS[student]))
            if any(q["student"] == student and q["hash"] == r["hash"] for q in convs): continue
            convs.append(r)
            print(f"{student:20s} conv {r['kernel']:12s} input strides {r['in_strides']}, {r['BD']}x{r['BL']} tiles, {r['warps']} warps, "
                  f"{r['program']['total']} instructions a warp, {r.get('registers')} regs, {r.get('stack_bytes')} B stack: "
                  f"{r['warp_instructions'] / 1e6:.1f} M warp-instr a call", flush=True)
    write_json(a.out, dict(study="scan_sass", convs=convs, target="sm_90 (compiled here, not run)", precision="bf16 autocast",
                           environment=environment(), seconds=round(time.time() - t0, 1), rows=rows))


if __name__ == "__main__":
    main()
