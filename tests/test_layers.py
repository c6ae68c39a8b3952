"""The package layers (docs/architecture.md, "Layers"): no import points upward, no import cycles.

    schemas  <-  jobs, model_udfs  <-  training  <-  control  <-  gateway, tools, bench
"""

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYER = {"schemas": 0, "jobs": 1, "model_udfs": 1, "training": 2, "control": 3, "gateway": 4, "tools": 4, "bench": 4}


def project_imports(path: Path) -> set[str]:
    """Modules of the project imported by a file (at any depth: lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in LAYER}


def modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYER:
        for f in (REPO / pkg).rglob("*.py"):
            parts = f.relative_to(REPO).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def test_no_import_points_upward():
    wrong = []
    for name, path in modules().items():
        for imp in project_imports(path):
            if LAYER[imp.split(".")[0]] > LAYER[name.split(".")[0]]:
                wrong.append(f"{name} imports {imp}")
    assert not wrong, "\n".join(wrong)


def test_model_udfs_and_jobs_do_not_import_each_other_upward():
    # runners are hosted by jobs (jobs.models), never the other way round
    for name, path in modules().items():
        if name.startswith("model_udfs"):
            assert not [i for i in project_imports(path) if i.startswith("jobs")], name


def test_no_import_cycles():
    mods = modules()
    graph = defaultdict(set)
    for name, path in mods.items():
        for imp in project_imports(path):
            target = imp if imp in mods else imp.rsplit(".", 1)[0]
            if target in mods and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(mods):
        if n not in state:
            visit(n, [n])
    assert not cycles, "\n".join(cycles)


def test_no_folder_holds_more_than_a_third_of_the_source_lines():
    lines = defaultdict(int)
    for pkg in LAYER:
        for f in (REPO / pkg).rglob("*.py"):
            lines[f.parent.relative_to(REPO).as_posix()] += len(f.read_text().splitlines())
    total = sum(lines.values())
    assert max(lines.values()) <= total / 3, sorted(lines.items(), key=lambda kv: -kv[1])[:3]
