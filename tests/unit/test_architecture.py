"""The house rules, checked on the source (issue 10): no import cycle between Slipway's modules
(function-local imports counted too), adapters import neither Flask nor the database nor portal,
the service layer imports no front door, and no product file over 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("portal", "slurm_bridge", "accounting", "git_gateway", "container_images")
ADAPTERS = ("slurm_bridge", "accounting", "git_gateway", "container_images")
FRONT_DOORS = ("portal.web", "portal.api", "portal.cli", "portal.app")
SERVICE_ROOMS = ("portal.teams", "portal.projects", "portal.jobs", "portal.billing", "portal.identity")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imported_names(mod: str, path: Path) -> set[str]:
    """Every dotted name ``mod`` imports, anywhere in the file (function bodies included)."""
    is_pkg = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{a.name}" for a in node.names)
    return names


def _known(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the Slipway modules it imports (a package's ``__init__`` counts as imported
    with any of its submodules, except by modules inside that package)."""
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        deps: set[str] = set()
        for name in _imported_names(mod, path):
            target = _known(name)
            if target is None:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and dep != mod and not mod.startswith(dep + "."):
                    deps.add(dep)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_checker_finds_a_cycle_and_a_local_import(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from .x import y\n    import portal.jobs\n")
    assert _imported_names("portal.web.m", path) == {"portal.web.x", "portal.web.x.y", "portal.jobs"}


def test_no_import_cycles_local_imports_included():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def _imports_of(prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    out = {}
    for mod, path in MODULES.items():
        if mod.startswith(prefixes):
            out[mod] = {n for n in _imported_names(mod, path)}
    return out


def test_adapters_import_neither_flask_nor_the_database_nor_portal():
    bad = {mod: sorted(n for n in names if n.split(".")[0] in ("flask", "sqlalchemy", "portal",
                                                                "flask_login", "werkzeug"))
           for mod, names in _imports_of(ADAPTERS).items()}
    assert not {m: b for m, b in bad.items() if b}


def test_the_service_layer_imports_no_front_door_and_no_flask():
    def front(name: str) -> bool:
        if name.startswith("werkzeug.security"):
            return False  # password hashing only (identity/passwords.py), no web machinery
        return name.split(".")[0] in ("flask", "flask_login", "werkzeug", "click", "rich") or \
            any(name == f or name.startswith(f + ".") for f in FRONT_DOORS)

    bad = {mod: sorted(n for n in names if front(n))
           for mod, names in _imports_of(SERVICE_ROOMS).items()}
    assert not {m: b for m, b in bad.items() if b}


def test_the_node_program_imports_only_itself_and_the_standard_library():
    node = "git_gateway.node"
    for mod, names in _imports_of((node,)).items():
        ours = {n for n in names if n.split(".")[0] in PACKAGES}
        assert all(n == node or n.startswith(node + ".") for n in ours), (mod, ours)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_product_file_over_400_lines(pkg):
    big = {str(p.relative_to(ROOT)): n for m, p in MODULES.items() if m.split(".")[0] == pkg
           for n in [len(p.read_text().splitlines())] if n > MAX_LINES}
    assert not big, f"split these by what they hold: {big}"
