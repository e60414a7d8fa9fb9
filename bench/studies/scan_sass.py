"""Instructions a step of the 'seq' selective-scan kernels costs, read from their machine code for an H100/H200 (sm_90).

No GPU is needed: Triton compiles a kernel for a named target on any machine, and the `nvdisasm` that ships with its
NVIDIA backend turns the binary into SASS. This finds the kernel's loops in the SASS (a backward branch to an earlier
label), counts the instructions of each step loop by kind (global loads and stores, shuffles, barriers, special
functions), and multiplies them out to warp-instructions per call at the replication grid's shapes:

    programs x warps x chunks x (chunk overhead + steps a chunk x instructions a step)

for each way a step gets its values (`SCAN_SEQ_IO`: 'step' or 'staged') and for the chunk lengths before and after
equal chunks (`SCAN_T` 16 walked as 16, or as the equal chunks the kernels now use). At the vim_fashion shape the 'step' backward issues about 244 M
warp-instructions a call; an H200 issues at most about 1.05 T a second (132 SMs x 4 schedulers x 1.98 GHz), so issue
alone takes 0.23 ms of the 0.39 ms that call measured in a CAB step. The counts are a proxy for time, not a time:
`bench.studies.scan_tune` measures that on a GPU.

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

SHAPES = {"vim_fashion": (128, 384, 50), "vim_tiny": (64, 384, 197)}   # batch, channels, length (N 16)
# (kernel, SCAN_SEQ_IO, channels a program, warps, SCAN_T, equal chunks?)
CASES = [("fwd", "step", 16, 2, 16, False), ("fwd", "step", 16, 2, 16, True), ("fwd", "staged", 16, 2, 16, True),
         ("fwd", "staged", 16, 1, 16, True),
         ("bwd", "step", 16, 1, 16, False), ("bwd", "step", 16, 1, 16, True), ("bwd", "staged", 16, 1, 16, True),
         ("bwd", "staged", 16, 2, 16, True)]
KINDS = ("LDG", "STG", "LDS", "STS", "SHFL", "BAR", "MUFU", "LDL", "STL", "ATOMG", "RED")
BF16 = ("u_ptr", "dt_ptr", "z_ptr", "out_ptr", "B_ptr", "C_ptr", "gout_ptr", "gu_ptr", "gdt_ptr", "gz_ptr")


def tool(name:str)->str:
    "A binary of Triton's NVIDIA backend (nvdisasm, cuobjdump), or SystemExit when this Triton has none."
    import triton
    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not p.exists(): raise SystemExit(f"scan_sass: this Triton ships no {name} ({p})")
    return str(p)


def compile_sm90(fn, constexprs:dict, warps:int):
    "fn compiled for sm_90 with bf16 activations and float32 everything else: Triton's CompiledKernel."
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig = {a: "constexpr" if a in constexprs else ("*bf16" if a in BF16 else "*fp32") if a.endswith("_ptr") else "i32"
           for a in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps))


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


def analyse(kernel:str, io:str, bd:int, warps:int, T:int, equal:bool, shapes:dict=SHAPES, N:int=16)->dict:
    """One case: the step loops' instruction mix, the chunk loop's overhead, registers and spills, and
    warp-instructions per call at each shape (the chunk length each shape gets)."""
    import triton
    import cab_bench.ops.triton_scan as ts
    fn = ts._ss_fwd_seq if kernel == "fwd" else ts._ss_bwd_seq
    per_shape = {}
    for name, (b, d, l) in shapes.items():
        Te = triton.cdiv(l, triton.cdiv(l, T)) if equal else T
        per_shape[name] = dict(T=Te, chunks=triton.cdiv(l, Te), programs=b * (d // bd))
    builds = {}
    for Te in sorted({v["T"] for v in per_shape.values()}):
        const = dict(N=N, NP=triton.next_power_of_2(N), BD=bd, T=Te, B_CONST=False, C_CONST=False, HAS_D=True,
                     HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, TP=triton.next_power_of_2(Te), STAGED=io == "staged",
                     **(dict(HAS_H0=False) if kernel == "fwd" else dict(HAS_GLAST=False, BC_PART=True)))
        t0 = time.time()
        k = compile_sm90(fn, const, warps)
        ins, loops = sass_loops(k.asm["cubin"])
        inner = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
        outer = [lp for lp in loops if any(o != lp and o[0] >= lp[0] and o[1] <= lp[1] for o in loops)]
        if len(inner) != (1 if kernel == "fwd" else 2) or len(outer) != 1:
            raise RuntimeError(f"scan_sass: {kernel}/{io}: expected {1 if kernel == 'fwd' else 2} step loops in one "
                               f"chunk loop, found loops {loops}")
        steps = [mix(ins[a:b + 1]) for a, b in inner]
        ch = outer[0]
        overhead = ch[1] - ch[0] + 1 - sum(s["total"] for s in steps)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"]); f.flush()
            use = subprocess.run([tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", use)
        builds[Te] = dict(step_loops=steps, chunk_overhead=overhead, registers=int(m.group(1)) if m else None,
                          stack_bytes=int(m.group(2)) if m else None, compile_s=round(time.time() - t0, 2))
    for name, v in per_shape.items():
        bl = builds[v["T"]]
        v["warp_instructions"] = v["programs"] * warps * v["chunks"] * (
            bl["chunk_overhead"] + v["T"] * sum(s["total"] for s in bl["step_loops"]))
    return dict(kernel=kernel, SCAN_SEQ_IO=io, BD=bd, warps=warps, SCAN_T=T, equal_chunks=equal,
                builds={str(k): v for k, v in builds.items()}, shapes=per_shape)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="one forward case at one shape (a CPU test)")
    a = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)       # the kernels must be Triton's JIT functions, not the interpreter's
    cases = CASES[2:3] if a.smoke else CASES
    shapes = {"vim_fashion": SHAPES["vim_fashion"]} if a.smoke else SHAPES
    t0, rows = time.time(), []
    for c in cases:
        rows.append(analyse(*c, shapes=shapes))
        r = rows[-1]
        print(f"{r['kernel']} {r['SCAN_SEQ_IO']:6s} BD {r['BD']} warps {r['warps']} T {r['SCAN_T']} equal {r['equal_chunks']!s:5s}",
              " ".join(f"{n}: {v['chunks']}x{v['T']} steps, {v['warp_instructions'] / 1e6:.1f} M warp-instr"
                       for n, v in r["shapes"].items()),
              "| step loops", [s["total"] for b in r["builds"].values() for s in b["step_loops"]], flush=True)
    write_json(a.out, dict(study="scan_sass", target="sm_90 (compiled here, not run)", environment=environment(),
                           seconds=round(time.time() - t0, 1), cases=rows))


if __name__ == "__main__":
    main()
