"""Imports inside cab_bench go one way, ops <- models <- (data, train) <- distill <- runs <- (analysis, experiment, sweep),
with no cycles: every import statement of every module counts, including those inside functions (parsed with `ast`)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cab_bench"
# layer of each part of the package (a module, or a subpackage with its modules); a part may import its own layer
# and those below it, never one above
LAYERS = {"core": 0, "guard": 1, "ops": 1, "models": 2, "data": 3, "train": 3, "distill": 4, "runs": 5,
          "analysis": 6, "experiment": 6, "sweep": 6, "pretrain": 7, "testing": 8}
SKIP = {"_modidx", "__init__"}


def modules():
    "dotted name -> path of every module of the package."
    out = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = f
    return out


def imports(name, path):
    "The cab_bench modules `name` imports anywhere in its file (top level, functions, methods)."
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "cab_bench"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else: mod = node.module or ""
            if mod.split(".")[0] != "cab_bench": continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}          # `from cab_bench import runs` imports a module
    return out


def part(mod):
    "The part of the package a dotted module name belongs to ('models' for cab_bench.models.mamba)."
    bits = mod.split(".")
    return bits[1] if len(bits) > 1 else None


def graph():
    mods = modules()
    g = {}
    for name, path in mods.items():
        if name.split(".")[-1] in SKIP or name == "cab_bench": continue
        g[name] = {m for m in imports(name, path) if m in mods and m != "cab_bench"}
    return g


def test_every_part_has_a_layer():
    parts = {part(m) for m in graph()}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_imports_go_down():
    bad = [(a, b) for a, bs in graph().items() for b in bs if LAYERS[part(b)] > LAYERS[part(a)]]
    assert not bad, "imports against the layer order: " + ", ".join(f"{a} -> {b}" for a, b in sorted(bad))


def test_no_cycles_between_parts():
    "No cycle between parts (within a layer too: e.g. analysis and experiment)."
    g = {}
    for a, bs in graph().items():
        g.setdefault(part(a), set()).update(part(b) for b in bs if part(b) != part(a))
    cycles = [c for c in (find_cycle(g, n) for n in g) if c]
    assert not cycles, f"import cycles between parts: {cycles[0]}"


def test_no_cycles_between_modules():
    "No cycle between modules either (a package's __init__ only gathers its modules, so it is left out)."
    g = {a: {b for b in bs if not (PKG.parent / b.replace(".", "/") / "__init__.py").exists()} for a, bs in graph().items()}
    cycles = [c for c in (find_cycle(g, n) for n in g) if c]
    assert not cycles, f"import cycles between modules: {cycles[0]}"


def find_cycle(g, start):
    "A cycle through `start` (as a list of nodes), or None."
    stack, seen = [(start, [start])], set()
    while stack:
        n, path = stack.pop()
        for m in g.get(n, ()):
            if m == start: return path + [start]
            if m not in seen: seen.add(m); stack.append((m, path + [m]))
    return None


def test_the_walk_sees_function_level_imports(tmp_path):
    "The parser finds imports inside functions (the old analysis <-> experiment circle was one), relative ones too."
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from cab_bench.experiment import run\n    from .runs import prepare\n    from . import sweep\n")
    assert imports("cab_bench.probe", probe) >= {"cab_bench.experiment", "cab_bench.runs", "cab_bench.sweep"}
    g = graph()
    assert "cab_bench.runs" in g["cab_bench.experiment"] and "cab_bench.analysis" in g["cab_bench.experiment"]
    assert not any(b.startswith("cab_bench.experiment") for b in g["cab_bench.analysis"])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
