"""The suite's report: SUMMARY.md from a run's JSON files, and the comparison of two runs.

    python -m bench.report summary bench/results               # regenerate bench/results/SUMMARY.md
    python -m bench.report compare bench/results /tmp/new_run  # every ratio of two runs, its noise range, moved or not
    python -m bench.report compare bench/results /tmp/new_run --out bench/results/REPRO.md

SUMMARY.md holds the targets with measured values, then every table; everything in it is computed from ops.json,
step.json, vision.json, gen.json and run.json (and kernels.json and step_vs_mamba.json where present), nothing is typed in.

A re-run reproduces the committed tables when every ratio moves by no more than the noise of its timings: a row is
"moved" when it changed by more than `--tol` (default 0.10) and the two runs' noise ranges (from each point's min
and max time) do not overlap. Only points measured in both runs are compared. A point one run did not reach (time
cap) is listed as such, not counted as a change.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SECTIONS = ("ops", "step", "vision", "gen")
BUILD_FREE = ("kernels", "step_vs_mamba")      # bench.bench_kernels and bench.studies.step_vs_mamba, when present
TARGETS = dict(time=1.15, memory=0.1, gen=5.0)


def load(out_dir)->dict:
    out_dir, res = Path(out_dir), {}
    for name in (*SECTIONS, "run", *BUILD_FREE):
        p = out_dir / f"{name}.json"
        if p.exists(): res[name] = json.loads(p.read_text())
    return res


def f(v, nd=2, unit=""):
    "A number for a table: thousands separated, small values with three significant digits."
    if v is None: return "-"
    if isinstance(v, str): return v
    if abs(v) >= 1000: return f"{v:,.0f}{unit}"
    if abs(v) >= 100: return f"{v:.0f}{unit}"
    if v != 0 and abs(v) < 1: return f"{v:.3g}{unit}"
    return f"{v:.{nd}f}{unit}"


def table(header:list, rows:list)->str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def verdict(measured, target:float, le:bool)->str:
    "met / missed, and by how much."
    if measured is None: return "not measured"
    if (measured <= target) if le else (measured >= target): return "**met**"
    if le:
        over = measured / target
        return f"**missed**: {over:.2f}x the target" if over >= 2 else f"**missed** by {100 * (over - 1):.0f}%"
    short = target / measured if measured > 0 else float("inf")
    return f"**missed**: {short:.2f}x short of the target"


# ------------------------------------------------------------------------------------------------------------- lookups
def step_row(step:dict, method:str, L:int):
    return next((r for r in step.get("results", []) if r["method"] == method and r["L"] == L), None)


def step_skip(step:dict, method:str, L:int):
    return next((s["why"] for s in step.get("skipped", []) if s.get("method") == method and s.get("L") in (L, None)), None)


def gen_row(gen:dict, model:str, prompt:int, batch:int):
    return next((r for r in gen.get("results", []) if (r["model"], r["prompt"], r["batch"]) == (model, prompt, batch)), None)


# ------------------------------------------------------------------------------------------------------------- targets
def targets(res:dict)->tuple[list, list]:
    "Rows of the targets table and, for each missed target, a note on where the time or memory goes."
    rows, notes = [], []
    step, gen, ops = res.get("step"), res.get("gen"), res.get("ops")
    if step:
        L = step["settings"]["ref_len"]
        cab, kd = step_row(step, "cab", L), step_row(step, "soft_kd", L)
        ratio = cab["ms"] / kd["ms"] if cab and kd else None
        b = cab["batch"] if cab else "-"
        rows.append(["CAB step time / soft_kd step time", f"L={L}, batch {b}; CAB one stage (CE + KL + 0.5 align) vs soft_kd (KL + CE)",
                     f"{f(ratio)} ({f(cab and cab['ms'], 1)} / {f(kd and kd['ms'], 1)} ms)", f"<= {TARGETS['time']}",
                     verdict(ratio, TARGETS["time"], True) if ratio else why_missing(step, ("cab", "soft_kd"), L)])
        others = [f"L={r['L']}: {r['ms'] / k['ms']:.2f}" for r in sorted(step["results"], key=lambda r: r["L"])
                  if r["method"] == "cab" and r["L"] != L and (k := step_row(step, "soft_kd", r["L"]))]
        if others: notes.append("CAB / soft_kd step time at the other lengths: " + ", ".join(others) + ".")
        if ratio and ratio > TARGETS["time"]: notes.append(time_note(step, L))
        align, mo = step_row(step, "cab_align", L), step_row(step, "mohawk_orient", L)
        mem = lambda r: r and r.get("peak_gb")
        if mem(align) and mem(mo):
            m_ratio = align["peak_gb"] / mo["peak_gb"]
            act = (align["peak_gb"] - align["static_gb"]) / (mo["peak_gb"] - mo["static_gb"])
            rows.append(["CAB peak memory / MOHAWK stage-1 peak memory", f"L={L}, batch {align['batch']}; the alignment stages: CAB stage 1 "
                         "(align) vs MOHAWK stage 1 (orient); allocator peak incl. weights and optimizer state",
                         f"{f(m_ratio, 3)} ({f(align['peak_gb'])} / {f(mo['peak_gb'])} GB); above static: {f(act, 3)}",
                         f"<= {TARGETS['memory']}", verdict(m_ratio, TARGETS["memory"], True)])
            one = step_row(step, "cab", L)
            if mem(one): notes.append(f"CAB one-stage (with KL + CE over the vocabulary) / MOHAWK stage 1 peak memory at L={L}: "
                                      f"{one['peak_gb'] / mo['peak_gb']:.3f} ({f(one['peak_gb'])} / {f(mo['peak_gb'])} GB).")
            if m_ratio > TARGETS["memory"]: notes.append(memory_note(step, L))
        elif mem(align) and step_skip(step, "mohawk_orient", L) == "oom":
            rows.append(["CAB peak memory / MOHAWK stage-1 peak memory", f"L={L}", f"MOHAWK stage 1 does not fit (OOM); CAB stage 1 "
                         f"{f(align['peak_gb'])} GB", f"<= {TARGETS['memory']}", "**met** (MOHAWK runs out of memory)"])
        else:
            rows.append(["CAB peak memory / MOHAWK stage-1 peak memory", f"L={L}", "-", f"<= {TARGETS['memory']}",
                         "not measured" + (" (CPU run: no allocator statistics)" if step.get("smoke") or not step["env"].get("gpu") else
                                           ": " + why_missing(step, ("cab_align", "mohawk_orient"), L))])
    if gen:
        P = gen["settings"]["ref_prompt"]
        for b in gen["settings"]["batches"]:
            s, t = gen_row(gen, "student", P, b), gen_row(gen, "teacher", P, b)
            ratio = s["tokens_per_s"] / t["tokens_per_s"] if s and t else None
            rows.append([f"student / teacher generation tokens/s, batch {b}", f"prompt {P} tokens + {gen['settings']['new_tokens']} "
                         "generated, end to end (prefill included)", f"{f(ratio)} ({f(s and s['tokens_per_s'], 1)} / {f(t and t['tokens_per_s'], 1)} tok/s)"
                         + (f"; decode only {s['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f}" if s and t else ""),
                         f">= {TARGETS['gen']}", verdict(ratio, TARGETS["gen"], False) if ratio else "not measured"])
            if ratio and ratio < TARGETS["gen"]: notes.append(gen_note(s, t, P, b))
    if ops:
        parts = [f"{k.replace('/float32', '').replace('/', ' ')}: {v['chunked_over_cuda']:.1f}x" for k, v in ops.get("summary", {}).items()
                 if v.get("chunked_over_cuda")]
        why = "; ".join(sorted({w['cuda'] for w in ops.get("unavailable", {}).values()}))
        rows.append(["chunked PyTorch time / mamba-ssm kernel time", "ENV.md's shapes (Vim-Tiny selective scan; Mamba-2 SSD at 2K)",
                     ", ".join(parts) if parts else f"kernels unavailable ({why})" if why else "-", "(reported)", "-"])
    return rows, notes


def why_missing(sec, methods, L)->str:
    whys = [f"{m}: {step_skip(sec, m, L)}" for m in methods if not step_row(sec, m, L) and step_skip(sec, m, L)]
    return "not measured" + (f" ({'; '.join(whys)})" if whys else "")


def _top(row, key="top_time", n=6)->str:
    p = row.get("profile") or {}
    items = [e for e in p.get(key, []) if not e["name"].startswith(("bench::", "ProfilerStep"))][:n]
    val = (lambda e: f"{f(e['self_time_ms'], 1)} ms") if key == "top_time" else (lambda e: f"{f(e['self_memory_mb'] / 1024)} GB")
    return ", ".join(f"`{e['name'][:60]}` {val(e)}" for e in items)


def time_note(step, L)->str:
    cab, kd = step_row(step, "cab", L), step_row(step, "soft_kd", L)
    pc, pk = cab.get("phases") or {}, kd.get("phases") or {}
    parts = [f"{name} {pc.get(k, 0) - pk.get(k, 0):+.1f} ms" for name, k in
             (("teacher forward (Q/K capture)", "teacher_forward_ms"), ("student forward (B/C returned)", "student_forward_ms"),
              ("rest of the forward (bridge, losses)", "other_forward_ms"), ("backward", "backward_ms"), ("optimizer (bridge parameters)", "optimizer_ms"))]
    s = (f"**Where CAB's extra step time goes** (L={L}, median of {pc.get('repeats', 1)} instrumented steps each, CAB minus soft_kd): "
         + ", ".join(parts) + ".")
    if cab.get("profile"):
        on = "device" if "device" in cab["profile"].get("time_key", "") else "CPU"
        s += f" Top ops of the CAB step by self {on} time (torch.profiler, one step): {_top(cab)}."
    if kd.get("profile"): s += f" soft_kd's: {_top(kd)}."
    return s


def memory_note(step, L)->str:
    a, m = step_row(step, "cab_align", L), step_row(step, "mohawk_orient", L)
    pa, pm = a.get("phases") or {}, m.get("phases") or {}
    def desc(name, r, p):
        return (f"{name}: static (weights + AdamW state) {f(r['static_gb'])} GB, teacher outputs kept for the loss "
                f"{f(p.get('teacher_outputs_gb'))} GB, allocated after the forward {f(p.get('after_forward_gb'))} GB, peak {f(r['peak_gb'])} GB")
    s = f"**Where the memory goes** (L={L}): {desc('CAB stage 1', a, pa)}; {desc('MOHAWK stage 1', m, pm)}."
    if m.get("profile"): s += f" MOHAWK's largest allocations by op: {_top(m, 'top_memory')}."
    if a.get("profile"): s += f" CAB's: {_top(a, 'top_memory')}."
    return s


def gen_note(s, t, P, b)->str:
    return (f"**Where generation time goes** (prompt {P}, batch {b}): student prefill {f(s['prefill_ms'], 1)} ms + "
            f"{f(s['decode_ms_per_token'], 2)} ms/token; teacher prefill {f(t['prefill_ms'], 1)} ms + {f(t['decode_ms_per_token'], 2)} ms/token "
            f"(state carried: student {f(s['state_mb'], 1)} MB, teacher KV cache {f(t['state_mb'], 0)} MB).")


# -------------------------------------------------------------------------------------------------------------- tables
def header(res)->str:
    sec = next((res[k] for k in (*SECTIONS,) if k in res), None)
    if sec is None: return "No results yet."
    e, run = sec["env"], res.get("run", {})
    gpu = e.get("gpu") or {}
    v = e.get("versions", {})
    lines = [f"- machine: {e.get('device')}" + (f" ({gpu.get('memory_gb')} GB, compute capability {gpu.get('capability')}, driver "
                                                 f"{gpu.get('driver')}, CUDA runtime {e.get('cuda_runtime')})" if gpu else f" (CPU: {e.get('cpu')}, {e.get('cpu_count')} cores)"),
             "- versions: " + ", ".join(f"{k} {v.get(k) or 'not installed'}" for k in ("torch", "triton", "timm", "transformers", "mamba-ssm", "causal-conv1d")),
             f"- code: commit {e.get('commit')}" + (" (with uncommitted changes)" if e.get("dirty") else "") + f", source hash {e.get('source_hash')}",
             f"- run: {e.get('timestamp')}, {'SMOKE configuration (tiny shapes, CPU check: not a measurement)' if sec.get('smoke') else 'full configuration'}"]
    if run:
        lines.append(f"- command: `{run.get('command')}`; wall time {f(run.get('wall_s'), 0)} s (" + ", ".join(
            f"{k} {f(s.get('wall_s'), 0)} s" + (f" incl. {f(s['warmup_s'], 0)} s kernel warm-up" if s.get("warmup_s") else "")
            + f" {s.get('status')}" for k, s in run.get("sections", {}).items()) + ")")
        if run.get("prewarm"): lines.append(f"- Triton pre-warm: {json.dumps(run['prewarm'])}")
    return "\n".join(lines)


def ops_tables(ops)->str:
    bw = ops.get("copy_bandwidth", {})
    out = [f"Device-to-device copy: **{f(bw.get('gb_per_s'), 0)} GB/s** ({f(bw.get('bytes', 0) / 2**20, 0)} MB, read + write counted). "
           "Memory floor = every input read once and every output written once (fwd+bwd: plus the backward's inputs and gradients); "
           "GB/s = floor / time. Forward under `torch.no_grad()`; peak = allocator peak above the inputs."]
    unav = ops.get("unavailable", {})
    if unav: out.append("Unavailable paths: " + "; ".join(f"{op} {p}: {w}" for op, d in unav.items() for p, w in d.items()))
    env = [r for r in ops["results"] if r["kind"] == "env"]
    out.append("### At ENV.md's shapes (the sequential reference runs only here)\n" + table(
        ["op", "shape", "dtype", "pass", "path", "ms", "reps", "peak MB", "floor MB", "GB/s", "% of copy"],
        [[r["op"], _shape(r["shape"]), r["dtype"], r["pass_"], r["path"], f(r["ms"], 3), r["reps"], f(r["peak_mb"], 0), f(r["floor_mb"], 0),
          f(r["gb_per_s"], 0), f(r["pct_of_copy"], 1)] for r in env]))
    if ops.get("summary"):
        out.append(table(["op / dtype / pass", "ref / chunked", "chunked / cuda"],
                         [[k, f(v["ref_over_chunked"], 1) + "x" if v["ref_over_chunked"] else "-",
                           f(v["chunked_over_cuda"], 1) + "x" if v["chunked_over_cuda"] else "-"] for k, v in ops["summary"].items()]))
    sw = [r for r in ops["results"] if r["kind"] == "sweep"]
    if sw:
        keys = sorted({(r["op"], r["dtype"], r["pass_"], r["l"]) for r in sw})
        get = lambda k, p: next((r for r in sw if (r["op"], r["dtype"], r["pass_"], r["l"]) == k and r["path"] == p), None)
        rows = []
        for k in keys:
            c, k_ = get(k, "chunked"), get(k, "cuda")
            rows.append([k[0], k[1], k[2], k[3], f(c and c["ms"], 3), f(k_ and k_["ms"], 3), f(c["ms"] / k_["ms"], 1) + "x" if c and k_ else "-",
                         f(c and c["gb_per_s"], 0), f(k_ and k_["gb_per_s"], 0), f(c and c["peak_mb"], 0), f(k_ and k_["peak_mb"], 0)])
        shapes = ", ".join(f"{op} {_shape(s)}" for op, s in ops["settings"]["sweep_shapes"].items())
        out.append(f"### Sequence-length sweep ({shapes})\n" + table(
            ["op", "dtype", "pass", "L", "chunked ms", "cuda ms", "chunked / cuda", "chunked GB/s", "cuda GB/s", "chunked peak MB", "cuda peak MB"], rows))
    out.append(_skips(ops))
    return "\n\n".join(x for x in out if x)


def _shape(s): return ", ".join(f"{k}={v}" for k, v in s.items())


def _skips(sec)->str:
    sk = sec.get("skipped", [])
    if not sk: return ""
    return "Not measured: " + "; ".join(", ".join(f"{k}={_shape(v) if isinstance(v, dict) else v}" for k, v in s.items() if k != "why")
                                        + f" -> {s['why']}" for s in sk) + "."


def step_tables(step)->str:
    st = step["settings"]
    out = [f"Pair: {st['pair']['label']}. Batch = {st['tokens_per_step']} tokens // L; {st['precision']}; {st['optimizer']}. "
           f"Peak = allocator peak over the timed steps (weights, AdamW state, activations); static = allocated before them.",
           table(["label", "method / stage", "what"], [[m["label"], f"{m['method']} / {m['stage']}", m["what"]] for m in st["methods"]])]
    rows = []
    for r in sorted(step["results"], key=lambda r: (r["method"], r["L"])):
        kd = step_row(step, "soft_kd", r["L"])
        rows.append([r["method"], r["L"], r["batch"], f(r["ms"], 1), r["reps"], f(r["tokens_per_s"], 0), f(r["peak_gb"]), f(r["static_gb"]),
                     f(r["ms"] / kd["ms"]) if kd else "-", f(r["peak_gb"] / kd["peak_gb"]) if kd and r["peak_gb"] and kd["peak_gb"] else "-"])
    for s in step.get("skipped", []):
        if "L" in s: rows.append([s["method"], s["L"], s.get("batch", "-"), s["why"], "", "", "", "", "", ""])
    out.append(table(["method", "L", "batch", "ms / step", "reps", "tokens/s", "peak GB", "static GB", "time / soft_kd", "peak / soft_kd"], rows))
    out += _breakdown(step["results"], f"at L={st['ref_len']}")
    return "\n\n".join(out)


def _breakdown(results, where:str)->list:
    "The phase table and the profile links of the rows that have them."
    out = []
    ph = [(r["method"], r["phases"]) for r in results if r.get("phases")]
    if ph:
        out.append(f"### Where one step goes {where} (median of instrumented steps; memory after each phase)\n" + table(
            ["method", "teacher fwd ms", "student fwd ms", "rest of fwd ms", "backward ms", "optimizer ms", "total ms",
             "teacher outputs GB", "after forward GB", "peak GB"],
            [[m, f(p["teacher_forward_ms"], 1), f(p["student_forward_ms"], 1), f(p["other_forward_ms"], 1), f(p["backward_ms"], 1),
              f(p["optimizer_ms"], 1), f(p["total_ms"], 1), f(p.get("teacher_outputs_gb")), f(p.get("after_forward_gb")), f(p.get("peak_gb"))]
             for m, p in ph]))
    pf = [(r["method"], r["profile"]) for r in results if r.get("profile")]
    if pf:
        out.append("Profiles (torch.profiler, one step after warm-up): " + ", ".join(f"[{m}]({p['file']})" for m, p in pf) + ".")
    return out


def vision_tables(vis)->str:
    st = vis["settings"]
    kd = next((r for r in vis["results"] if r["method"] == "soft_kd"), None)
    rows = [[r["method"], r["what"], r["batch"], f(r["ms"], 1), r["reps"], f(r["images_per_s"], 0), f(r["peak_gb"]), f(r["static_gb"]),
             f(r["images_per_s"] / kd["images_per_s"]) if kd else "-"] for r in vis["results"]]
    return "\n\n".join(x for x in [f"Pair: {st['pair']['label']}; {st['precision']}; {st['optimizer']}.",
                                   table(["method", "what", "batch", "ms / step", "reps", "images/s", "peak GB", "static GB", "images/s vs soft_kd"], rows),
                                   *_breakdown(vis["results"], "at each method's batch"), _skips(vis)] if x)


def gen_tables(gen)->str:
    st = gen["settings"]
    rows = []
    for r in sorted(gen["results"], key=lambda r: (r["prompt"], r["batch"], r["model"])):
        other = gen_row(gen, "teacher", r["prompt"], r["batch"]) if r["model"] == "student" else None
        rows.append([r["prompt"], r["batch"], r["model"], f(r["prefill_ms"], 1), f(r["decode_ms_per_token"], 2), f(r["tokens_per_s"], 0),
                     f(r["decode_tokens_per_s"], 0), f(r["peak_gb"]), f(r["peak_gb"] - r["static_gb"]) if r["peak_gb"] is not None else "-",
                     f(r["state_mb"], 1), f(r["tokens_per_s"] / other["tokens_per_s"]) if other else ""])
    return "\n\n".join(x for x in [
        f"Pair: {st['pair']['label']}; {st['decoding']} decoding of {st['new_tokens']} tokens; {st['precision']}; teacher cache: {st['teacher_cache']}; "
        f"student: {st['student']}. tokens/s = batch x new tokens / time of the whole call; decode tokens/s excludes the prefill. "
        "Both models sit on the device together: peak GB includes both sets of weights.",
        table(["prompt", "batch", "model", "prefill ms", "decode ms/token", "tokens/s", "decode tokens/s", "peak GB",
               "peak above weights GB", "state MB", "student / teacher tokens/s"], rows),
        _skips(gen)] if x)


NOTES = """## How these numbers are made
- One command: `python -m bench.run_all` (GPU; `--smoke` or no CUDA device: the tiny CPU configuration CI runs). Each section
  writes its JSON after every point, under a wall-clock cap; a point that does not fit in memory is recorded as `oom` and ends
  that sweep; points beyond the cap are recorded as `time cap`.
- Times: CUDA events around each repeat, one synchronisation at the end, median over repeats after warm-up (the first calls
  compile and autotune; Triton kernels are pre-compiled in parallel processes before any timing). Memory: the caching
  allocator's peak (`torch.cuda.max_memory_allocated`). Inputs are random (token ids, images, scan inputs, output gradients).
- Models have random weights: speed and memory do not depend on the weights. The sequential reference scan runs only at
  ENV.md's shapes. The distillation step is the trainer's step (stage parameters, AdamW groups, `_Losses`, clipping) without
  its logging and checkpoints; soft_kd in the language table includes CE so that CAB's one-stage loss (CE + KL + align) differs
  from it only by the alignment."""


def build_free_tables(res:dict)->str:
    """The build-free paths against mamba-ssm: each op-level ratio of kernels.json and each whole-step ratio of
    step_vs_mamba.json, with its target and verdict as the scripts computed them."""
    out = []
    k = res.get("kernels")
    if k:
        e = k.get("env", {})
        out.append(f"{e.get('gpu')}; torch {e.get('torch')}, triton {e.get('triton')}, mamba-ssm {e.get('mamba-ssm') or 'not installed'}, "
                   f"fla-core {e.get('fla-core') or 'not installed'}; `python -m bench.bench_kernels` (fwd + bwd, median of "
                   "`triton.testing.do_bench`). Ratio = build-free path / mamba-ssm." + (f" Code: {k['code']}." if k.get("code") else ""))
        lg = k.get("triton_scan_long") or {}
        wd = k.get("triton_scan_wide") or {}
        cfg = k.get("triton_scan_config") or {}
        out.append("Triton selective-scan launch settings: " + ", ".join(f"{a} {b}" for a, b in cfg.items())
                   + (f"; from L {lg['from_L']} on: " + ", ".join(f"{a} {b}" for a, b in lg["settings"].items()) if lg.get("from_L") else "")
                   + (f"; below that, from {wd['from_rows']} rows (batch x d) on: " + ", ".join(f"{a} {b}" for a, b in wd["settings"].items())
                      if wd.get("from_rows") else "") + ".")
        rows = []
        for v in k.get("verdicts", []):
            op, shape = v["op"], v["shape"]
            r = (k.get(op) or {}).get(shape, {})
            t, c = r.get("triton", {}), r.get("cuda", {})
            rows.append([op, shape, f(c.get("fwdbwd_ms"), 3), f(t.get("fwdbwd_ms"), 3), f(v.get("time_ratio"), 2) + ("x" if "time_ratio" in v else ""),
                         f(v.get("fwd_ratio"), 2), f(v.get("mem_ratio"), 2) if "mem_ratio" in v else "-",
                         "<= 1.0 time" + (f", <= {v['mem_target']} memory" if v.get("mem_target") else ""), v["verdict"]])
        out.append(table(["op", "shape", "mamba-ssm ms", "build-free ms", "time ratio", "fwd ratio", "memory ratio", "target", "verdict"], rows))
    sv = res.get("step_vs_mamba")
    if sv:
        rows = []
        for name, r in sv.get("ratios", {}).items():
            what = (sv.get("sides", {}).get("with", {}).get("cases", {}).get(name) or {}).get("what", name)
            rows.append([name, what, f(r.get("with_ms"), 1), f(r.get("without_ms"), 1), f(r.get("ratio"), 2) + ("x" if "ratio" in r else ""),
                         f"<= {sv.get('target')}", r.get("verdict")])
        env = sv.get("environment") or {}
        out.append("Whole distillation step (`python -m bench.studies.step_vs_mamba`: the trainer's step, bf16 autocast, in two "
                   f"processes, one with mamba-ssm importable and one without) on {sv.get('machine') or env.get('device')}"
                   + (f", commit {sv['commit']}" if sv.get("commit") else "") + ".")
        out.append(table(["case", "what", "with mamba-ssm ms", "without ms", "ratio", "target", "verdict"], rows))
        if sv.get("note"): out.append(f"- {sv['note']}")
        prof = []
        for mode in ("with", "without"):
            side = sv.get("sides", {}).get(mode, {})
            for name, c in side.get("cases", {}).items():
                p = c.get("profile")
                if not p: prof.append(f"- {name}, {mode} mamba-ssm: no profile recorded ({side.get('source') or 'missing'})"); continue
                top = "; ".join(f"{k['name'][:60]} {f(k['device_ms'], 1)} ms ({f(k['calls'], 0)} calls)" for k in p["kernels"][:4])
                prof.append(f"- {name}, {mode} mamba-ssm: kernels {f(p['kernel_ms'], 1)} ms of the {f(c['ms'], 1)} ms step; top: {top}")
        if prof: out.append("Where the step's GPU time goes (torch.profiler, per step):\n" + "\n".join(prof))
    return "\n\n".join(out)


def render(res:dict)->str:
    parts = ["# cab_bench benchmark suite: results", "Generated by `python -m bench.report summary` from the JSON files next to it; do not edit.",
             header(res)]
    rows, notes = targets(res)
    if rows:
        parts.append("## Targets\n" + table(["quantity", "definition", "measured", "target", "verdict"], rows))
        if notes: parts.append("\n".join(f"- {n}" for n in notes))
    if "ops" in res: parts.append("## 1. Ops: `selective_scan` and `ssd_scan`\n" + ops_tables(res["ops"]))
    if "step" in res: parts.append("## 2. Distillation step, language\n" + step_tables(res["step"]))
    if "vision" in res: parts.append("## 2b. Distillation step, vision\n" + vision_tables(res["vision"]))
    if "gen" in res: parts.append("## 3. Generation\n" + gen_tables(res["gen"]))
    if any(k in res for k in BUILD_FREE): parts.append("## 4. Build-free kernels against mamba-ssm\n" + build_free_tables(res))
    parts.append(NOTES)
    return "\n\n".join(parts) + "\n"


def write(out_dir)->Path:
    p = Path(out_dir) / "SUMMARY.md"
    p.write_text(render(load(out_dir)))
    return p


# ------------------------------------------------------------------------------------------- comparing two runs
def _q(num:dict, den:dict, key:str="ms")->tuple:
    "A ratio of two timed points with its noise range: (median ratio, lowest, highest) from each point's min and max."
    lo, hi = (num.get(key + "_min"), num.get(key + "_max")), (den.get(key + "_min"), den.get(key + "_max"))
    v = num[key] / den[key]
    if None in lo or None in hi: return v, None, None
    return v, lo[0] / hi[1], lo[1] / hi[0]


def ratios(res:dict)->dict:
    "name -> (value, low, high) of every ratio the suite reports; low/high (the noise range) where the points have min/max."
    out = {}
    step, gen, ops, vis = res.get("step"), res.get("gen"), res.get("ops"), res.get("vision")
    if step:
        for L in sorted({r["L"] for r in step["results"]}):
            cab, kd = step_row(step, "cab", L), step_row(step, "soft_kd", L)
            if cab and kd: out[f"step time cab / soft_kd, L={L}"] = _q(cab, kd)
            al, mo = step_row(step, "cab_align", L), step_row(step, "mohawk_orient", L)
            if al and mo and al.get("peak_gb") and mo.get("peak_gb"):
                v = al["peak_gb"] / mo["peak_gb"]
                out[f"peak memory cab_align / mohawk_orient, L={L}"] = (v, v, v)      # allocator peaks: deterministic
    if gen:
        for P in sorted({r["prompt"] for r in gen["results"]}):
            for b in sorted({r["batch"] for r in gen["results"]}):
                s, t = gen_row(gen, "student", P, b), gen_row(gen, "teacher", P, b)
                if s and t: out[f"generation tokens/s student / teacher, prompt {P}, batch {b}"] = (s["tokens_per_s"] / t["tokens_per_s"], None, None)
    if ops:
        env = {(r["op"], r["dtype"], r["path"], r["pass_"]): r for r in ops.get("results", []) if r["kind"] == "env"}
        for (op, dt, path, ps), r in env.items():
            if path != "chunked": continue
            ref, cu = env.get((op, dt, "ref", ps)), env.get((op, dt, "cuda", ps))
            if ref: out[f"{op}/{dt}/{ps} time reference / chunked"] = _q(ref, r)
            if cu: out[f"{op}/{dt}/{ps} time chunked / kernel"] = _q(r, cu)
    if vis:
        base = next((r for r in vis.get("results", []) if r.get("method") == "soft_kd"), None)
        for r in vis.get("results", []):
            if base and r is not base:
                out[f"vision step time {r['method']} / soft_kd"] = _q(r, base)
    return out


def _fmt(v): return "-" if v is None else f"{v:.3g}"


def compare(a_dir, b_dir, tol:float=0.10)->str:
    a, b = ratios(load(a_dir)), ratios(load(b_dir))
    rows, moved, both = [], 0, 0
    for k in list(a) + [k for k in b if k not in a]:
        (va, la, ha), (vb, lb, hb) = a.get(k, (None,) * 3), b.get(k, (None,) * 3)
        rng = lambda v, lo, hi: _fmt(v) + (f" ({_fmt(lo)}-{_fmt(hi)})" if lo is not None and lo != hi else "")
        if va is None or vb is None:
            rows.append(f"| {k} | {rng(va, la, ha)} | {rng(vb, lb, hb)} | | not in both runs |")
            continue
        both += 1
        d = vb / va - 1
        overlap = None not in (la, ha, lb, hb) and la <= hb and lb <= ha
        verdict = "within tolerance" if abs(d) <= tol else "within noise (ranges overlap)" if overlap else "**moved**"
        moved += verdict == "**moved**"
        rows.append(f"| {k} | {rng(va, la, ha)} | {rng(vb, lb, hb)} | {100 * d:+.1f}% | {verdict} |")
    head = (f"Ratios of `{a_dir}` (A) and `{b_dir}` (B): {both} measured in both, {moved} moved (changed by more than "
            f"{100 * tol:.0f}% with no overlap of the two runs' noise ranges). A range is the ratio's lowest to highest "
            "value from the min and max time of each point; generation points have no range (one or two calls).\n\n"
            "| ratio | A (range) | B (range) | B / A - 1 | verdict |\n|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="write <dir>/SUMMARY.md from the JSON files there")
    s.add_argument("dir", nargs="?", default=str(Path(__file__).parent / "results"))
    c = sub.add_parser("compare", help="compare the ratios of two runs")
    c.add_argument("a"); c.add_argument("b")
    c.add_argument("--tol", type=float, default=0.10, help="relative change above which a row is marked (default 0.10)")
    c.add_argument("--out", default=None, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    if a.cmd == "summary":
        print(write(a.dir)); return
    text = compare(a.a, a.b, a.tol)
    if a.out: Path(a.out).write_text("# Re-run against the committed results\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
