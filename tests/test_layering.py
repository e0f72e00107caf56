"""Imports go one way (docs/design.md, "The import rule"), checked on the source with `ast`: nothing is imported.

    cli -> bench, quickstart -> robots -> runtime, train, sim, report -> model, data -> spec, config, resources, outputs

Every import counts, also those inside functions (they run on some call) and inside
`if TYPE_CHECKING:`. The robot-side client (`vla_client`, re-exported by `vla.runtime.client` and
`vla.runtime.wire`) reaches only the standard library, numpy, msgpack and websockets.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"vla": ROOT / "vla", "vla_client": ROOT / "packages" / "vla-client" / "vla_client"}

FOUNDATION = {"spec", "config", "resources", "outputs"}
# Which top-level parts of `vla` each part may import, besides itself (`vla.x.y` is part `x`;
# `vla/__init__.py` is part "vla"). An edge inside one layer is listed only where it is deliberate.
ALLOWED: dict[str, set[str]] = {
    "vla": set(),  # runs before every `import vla.<anything>`, the torch-free client included
    "resources": {"spec"},
    "spec": set(),
    "config": {"spec", "resources"},
    "outputs": {"spec"},  # what a command may write (vla/outputs.py)
    "data": FOUNDATION,
    "model": {"data"} | FOUNDATION,  # checkpoints carry norm stats; the FAST tokenizer is fit on a store
    "sim": {"model", "data"} | FOUNDATION,
    "train": {"model", "data"} | FOUNDATION,
    "runtime": {"sim", "model", "data"} | FOUNDATION,  # sim_robot.py serves a sim env; never train
    "report": {"model", "data"} | FOUNDATION,
    # Real robots implement runtime's Robot interface; their virtual buses are backed by sim's MuJoCo arms.
    "robots": {"runtime", "sim", "data"} | FOUNDATION,
    "bench": {"robots", "runtime", "train", "sim", "report", "model", "data"} | FOUNDATION,
    "quickstart": {"bench", "runtime", "train", "sim", "report", "model", "data"} | FOUNDATION,
    "cli": {"bench", "quickstart", "robots", "runtime", "train", "sim", "report", "model", "data"} | FOUNDATION,
}
assert all("cli" not in deps for deps in ALLOWED.values()), "nothing imports cli"

# The robot side: what each of these may reach, following every import (module- and function-level)
# through vla and vla_client, parent packages' __init__ included.
CLIENT_ROOTS = ("vla_client", "vla.runtime.client", "vla.runtime.wire")
CLIENT_THIRD_PARTY = {"numpy", "msgpack", "websockets"}
CLIENT_FORBIDDEN = ("vla.model", "vla.train", "vla.sim", "vla.data", "vla.bench", "vla.quickstart", "vla.cli")
# Importing these (module-level imports only: what `import` itself runs) loads no heavy stack.
ROBOT_SIDE_ROOTS = ("vla.runtime.run", "vla.runtime.control", "vla.runtime.robot")
HEAVY = ("torch", "transformers", "mujoco", "vla.model", "vla.train")


# ---- the checker ----


def module_index() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every module of vla and vla_client."""
    index = {}
    for top, root in SOURCES.items():
        for f in sorted(root.rglob("*.py")):
            parts = (top, *f.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            index[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return index


def parse_imports(
    source: str, module: str, is_package: bool = False, known: set[str] | frozenset = frozenset()
) -> list[tuple[int, str, bool]]:
    """(line, absolute dotted target, inside a function) for every import statement in `source`.

    `from a import b` targets `a.b` when that is a module in `known` (or `a` is `vla`: `from vla
    import sim` is the sim package), else `a`. Relative imports are resolved against `module`.
    """
    out: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((child.lineno, a.name, in_func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_package else module.split(".")[:-1]
                    if child.level - 1 > len(pkg) - 1:
                        raise ValueError(f"{module}:{child.lineno}: relative import beyond the top-level package")
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = []
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    target = sub if sub in known or (base == "vla" and a.name != "*") else base
                    if target not in targets:
                        targets.append(target)
                out.extend((child.lineno, t, in_func) for t in targets)
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def part(module: str) -> str | None:
    """The top-level part of `vla` a module belongs to; None outside vla."""
    names = module.split(".")
    if names[0] != "vla":
        return None
    return names[1] if len(names) > 1 and names[1] in ALLOWED else "vla"


def layer_violations(module: str, imports: list[tuple[int, str, bool]], where: str = "") -> list[str]:
    """Imports of `module` that go the wrong way, as 'file:line: module imports target (rule)'."""
    src, bad = part(module), []
    for line, target, _ in imports:
        dst = part(target)
        if src is None:  # vla_client: never vla
            if dst is not None:
                bad.append(f"{where or module}:{line}: {module} imports {target} (vla_client never imports vla)")
        elif dst is not None and dst != src and dst != "vla" and dst not in ALLOWED[src]:
            why = "nothing imports vla.cli" if dst == "cli" else f"vla.{src} may import only {sorted(ALLOWED[src])}"
            bad.append(f"{where or module}:{line}: {module} imports {target} ({why})")
    return bad


def _parents(module: str) -> list[str]:
    names = module.split(".")
    return [".".join(names[:i]) for i in range(1, len(names))]


def reach(roots, graph: dict[str, list[tuple[int, str, bool]]], *, function_level: bool) -> dict[str, str]:
    """Every module (ours, or a third-party top-level name) importing `roots` can run -> the edge that got there.

    `graph` maps our module names to their imports. Importing a.b.c runs a and a.b first.
    """
    seen: dict[str, str] = {}
    todo = [(r, "root") for r in roots]
    while todo:
        mod, via = todo.pop()
        if mod in seen:
            continue
        seen[mod] = via
        if mod not in graph:
            continue  # third party (or a module that does not exist: the import would fail anyway)
        todo.extend((p, f"parent package of {mod}") for p in _parents(mod))
        for line, target, in_func in graph[mod]:
            if function_level or not in_func:
                ours = target.split(".")[0] in SOURCES
                todo.append((target if ours else target.split(".")[0], f"{mod}:{line} imports {target}"))
    return seen


def full_graph() -> tuple[dict[str, list[tuple[int, str, bool]]], dict[str, Path]]:
    index = module_index()
    known = set(index)
    graph = {m: parse_imports(f.read_text(), m, is_pkg, known) for m, (f, is_pkg) in index.items()}
    return graph, {m: f.relative_to(ROOT) for m, (f, _) in index.items()}


@pytest.fixture(scope="module")
def graph():
    return full_graph()


# ---- the rules, on the tree ----


def test_every_part_of_vla_is_in_the_table(graph):
    parts = {m.split(".")[1] for m in graph[0] if m.startswith("vla.")}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED in tests/test_layering.py"


def test_imports_go_one_way(graph):
    imports, files = graph
    bad = [v for m in sorted(imports) for v in layer_violations(m, imports[m], str(files[m]))]
    assert not bad, "imports against the layering (docs/design.md):\n" + "\n".join(bad)


def import_cycles(imports: dict[str, list[tuple[int, str, bool]]]) -> list[list[str]]:
    """Groups of our modules that import each other, directly or around a loop (strongly connected
    components of the import graph, function-level imports included: they run on some call)."""
    edges = {m: sorted({t for _, t, _ in imps if t in imports and t != m}) for m, imps in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles(graph):
    imports, _ = graph
    cycles = import_cycles(imports)
    assert not cycles, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_loop():
    loop = {"a": [(1, "b", True)], "b": [(1, "c", False)], "c": [(1, "a", False)], "d": [(1, "a", False)]}
    assert import_cycles(loop) == [["a", "b", "c"]]


def test_client_reaches_only_numpy_msgpack_websockets(graph):
    imports, _ = graph
    reached = reach(CLIENT_ROOTS, imports, function_level=True)
    bad = [
        f"{m}  (via {via})"
        for m, via in sorted(reached.items())
        if m.startswith(CLIENT_FORBIDDEN)
        or (
            m not in imports
            and m.split(".")[0] not in SOURCES
            and m not in CLIENT_THIRD_PARTY
            and m not in sys.stdlib_module_names
        )
    ]
    assert not bad, "the robot-side client must need only numpy, msgpack and websockets:\n" + "\n".join(bad)


def test_robot_side_modules_import_no_heavy_stack(graph):
    imports, _ = graph
    reached = reach(ROBOT_SIDE_ROOTS, imports, function_level=False)
    bad = [f"{m}  (via {via})" for m, via in sorted(reached.items()) if m.startswith(HEAVY)]
    assert not bad, "importing the control loop's modules loads:\n" + "\n".join(bad)


# ---- the checker catches what it should (synthetic sources) ----


@pytest.mark.parametrize(
    "module,source,expect",
    [
        ("vla.model.x", "import torch\nfrom vla.spec import A\nfrom vla.data.stats import S\n", []),
        (
            "vla.model.x",
            "def f():\n    from vla.train.trainer import train\n",
            ["vla.model.x:2: vla.model.x imports vla.train"],
        ),
        ("vla.sim.x", "from vla import cli\n", ["nothing imports vla.cli"]),
        ("vla.runtime.x", "from ..train import trainer\n", ["imports vla.train"]),
        ("vla.runtime.x", "import vla.sim.env\n", []),
        ("vla.data.x", "if TYPE_CHECKING:\n    from vla.model.pi0.model import Pi0\n", ["vla.data may import only"]),
        ("vla.spec", "import vla.config\n", ["vla.spec may import only []"]),
        ("vla.config", "from vla.spec import A, B\nfrom vla.data import store, sampler\n", ["vla.data"]),
        ("vla_client.client", "import numpy\nfrom vla.runtime import policy\n", ["vla_client never imports vla"]),
        ("vla", "from vla import __version__\n", []),
    ],
)
def test_checker_on_synthetic_modules(module, source, expect):
    got = layer_violations(module, parse_imports(source, module))
    assert len(got) == len(expect), got
    for g, e in zip(got, expect):
        assert e in g, (g, e)


def test_reach_follows_function_imports_and_parent_packages():
    graph = {
        m: parse_imports(src, m, pkg, {"vla.runtime.client", "vla.runtime.policy"})
        for m, src, pkg in [
            ("vla", "", True),
            ("vla.runtime", "from vla.runtime.policy import Policy\n", True),
            ("vla.runtime.client", "import numpy\ndef f():\n    import websockets\n", False),
            ("vla.runtime.policy", "import torch\n", False),
        ]
    }
    everything = reach(["vla.runtime.client"], graph, function_level=True)
    assert {"websockets", "torch", "vla.runtime.policy"} <= set(everything)
    assert everything["torch"] == "vla.runtime.policy:1 imports torch"
    graph["vla.runtime"] = []
    on_import = reach(["vla.runtime.client"], graph, function_level=False)
    assert "numpy" in on_import and "websockets" not in on_import and "torch" not in on_import
