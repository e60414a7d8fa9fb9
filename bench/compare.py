"""Compare two runs of the suite: the ratios the targets are about, side by side, with their relative change.

    python bench/compare.py bench/results /tmp/new_run            # prints a markdown table
    python bench/compare.py bench/results /tmp/new_run --out bench/results/REPRO.md

A re-run reproduces the committed tables when every ratio moves by no more than the noise of its timings: a row is
"moved" when it changed by more than `--tol` (default 0.10) and the two runs' noise ranges (from each point's min
and max time) do not overlap. Only points measured in both runs are compared. A point one run did not reach (time
cap) is listed as such, not counted as a change.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import gen_row, load, step_row  # noqa: E402


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
    ap.add_argument("a"); ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=0.10, help="relative change above which a row is marked (default 0.10)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    text = compare(a.a, a.b, a.tol)
    if a.out: Path(a.out).write_text("# Re-run against the committed results\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
