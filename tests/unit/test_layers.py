"""The wings of detector/ and which may import which (the README's code map says the same)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "detector"
# The foundation every wing may use: config, errors, logging, process settings, JSON lines.
BASE = {"detector", "detector.config", "detector.exceptions", "detector.logs", "detector.runtime", "detector.jsonl"}
# wing -> the wings it may import (besides itself and BASE)
ALLOWED = {
    "core": set(),
    "kafka": set(),
    "offline": {"core"},
    "service": {"core", "kafka", "offline"},
    "console": {"core", "kafka"},
    "lifecycle": {"core", "kafka", "offline"},
    "cli": {"core", "kafka", "offline", "service", "console", "lifecycle"},
}
# Third-party libraries a wing must not import, even lazily.
FORBIDDEN = {
    "core": {"kafka", "confluent_kafka", "keras", "tensorflow", "prometheus_client", "sklearn", "pyod", "river"},
    "offline": {"kafka", "confluent_kafka", "prometheus_client"},
    "console": {"keras", "tensorflow"},
    "lifecycle": {"prometheus_client"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_the_wings_are_folders() -> None:
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ALLOWED)


def test_each_wing_imports_only_the_wings_below_it() -> None:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        me = wing(module_name(path))
        for imp in imports(path):
            top = imp.split(".")[0]
            if me in FORBIDDEN and top in FORBIDDEN[me]:
                bad.append(f"{module_name(path)} imports {imp}")
            if top == "simulators":
                bad.append(f"{module_name(path)} imports {imp} (simulators depend on detector, not the reverse)")
            if top != "detector" or imp in BASE or any(imp.startswith(b + ".") for b in BASE - {"detector"}):
                continue
            other = wing(imp)
            if me is None:
                assert other is not None or imp in BASE, imp
                bad.append(f"{module_name(path)} (the foundation) imports {imp}")
            elif other is not None and other != me and other not in ALLOWED[me]:
                bad.append(f"{module_name(path)} imports {imp}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles_between_modules() -> None:
    mods = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        m: {i for i in imports(p, top_level_only=True) if i in mods and i != m and not mods[i].name == "__init__.py"}
        for m, p in mods.items()
    }
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        assert m not in path, " -> ".join([*path[path.index(m) :], m])
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
