"""The package's layering, read from its source: no import cycles, and JAX and
matplotlib only where the design says (README, "How the code is laid out").

Every ``import`` statement of every module under ``jaxmia/`` is read with
``ast``, at module level and inside functions (a lazy import still ties two
modules together), and resolved to the jaxmia module or the outside package it
names.  Three rules:

* no cycle among jaxmia modules, lazy imports included;
* the host side (the attack statistics, the kinds' plans, arrays and analyses,
  the run-folder machinery) reaches neither JAX nor matplotlib through any
  import, lazy or not;
* only figure modules (``plotting.py``, ``kinds/*/figures.py`` and any module
  whose name ends in ``figures``) import matplotlib, and only the model,
  training and orchestration modules import JAX, Flax or Optax.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxmia"
DEVICE_LIBS = ("jax", "jaxlib", "flax", "optax", "chex")
PLOT_LIBS = ("matplotlib",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str], set[str]]:
    """(jaxmia modules imported anywhere, those imported at module level, outside
    top-level packages imported anywhere) by the module ``name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner, eager, outer = set(), set(), set()
    top_level = {id(n) for n in tree.body}
    # Statements under `if TYPE_CHECKING:` and the like still count: keep it simple
    # and strict, every import statement is an edge.
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            if t.split(".")[0] == "jaxmia":
                # the longest known module the name starts with ("from jaxmia
                # import plan" names the module jaxmia.plan)
                while t and t not in known:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    inner.add(t)
                    if id(node) in top_level:
                        eager.add(t)
            elif t:
                outer.add(t.split(".")[0])
    return inner, eager, outer


def _graph():
    mods = _modules()
    known = set(mods)
    edges, eager, outer = {}, {}, {}
    for name, path in mods.items():
        edges[name], eager[name], outer[name] = _imports(name, path, known)
    return mods, edges, eager, outer


def _reach(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _is_figure_module(name: str) -> bool:
    # plotting.py, and any module whose name ends in "figures" (kinds/*/figures.py).
    return name == "jaxmia.plotting" or name.rpartition(".")[2].endswith("figures")


def _is_device_module(name: str) -> bool:
    return name.startswith(("jaxmia.models", "jaxmia.training")) or name in (
        "jaxmia.experiment",
        "jaxmia.run",
    )


def _is_host_statistics(name: str) -> bool:
    """The layers that compute numbers on the host: never JAX, never matplotlib."""
    if name.startswith(("jaxmia.attack", "jaxmia.runs")):
        return True
    parts = name.split(".")
    return len(parts) == 4 and parts[1] == "kinds" and parts[3] in ("plan", "arrays", "analysis")


def test_no_import_cycles():
    _, edges, _, _ = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m) :] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)


def test_host_statistics_reach_neither_jax_nor_matplotlib():
    mods, edges, _, outer = _graph()
    checked = [n for n in mods if _is_host_statistics(n)]
    assert any(n.startswith("jaxmia.attack") for n in checked)  # the rule checks something
    for name in checked:
        for m in _reach(name, edges):
            bad = outer[m] & set(DEVICE_LIBS + PLOT_LIBS)
            assert not bad, f"{name} reaches {sorted(bad)} through {m}"
            assert not _is_figure_module(m), f"{name} imports the figure module {m}"


def test_only_figure_modules_import_matplotlib_and_only_device_modules_import_jax():
    mods, _, _, outer = _graph()
    for name in mods:
        if outer[name] & set(PLOT_LIBS):
            assert _is_figure_module(name), f"{name} imports matplotlib"
        if outer[name] & set(DEVICE_LIBS):
            assert _is_device_module(name), (
                f"{name} imports {sorted(outer[name] & set(DEVICE_LIBS))}"
            )


def test_analyze_without_figures_loads_neither_jax_nor_matplotlib(tmp_path):
    # At run time too: jaxmia analyze --no-plots on a golden run folder.
    import shutil

    golden = Path(__file__).resolve().parent / "data" / "golden" / "targets"
    run = tmp_path / "targets"
    shutil.copytree(golden, run, ignore=shutil.ignore_patterns("expected"))
    code = (
        "import sys; from jaxmia.analyze import main; "
        f"rc = main([{str(run)!r}, '--no-plots']); "
        "print(rc, sorted(m for m in ('jax', 'flax', 'optax', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr


def test_no_kind_is_named_outside_its_own_folder():
    # The kind registry is the only way to reach a kind: no module outside
    # kinds/<kind>/ spells a kind's name as a string (to branch on it, say).
    from jaxmia import kinds

    names = set(kinds.names())
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                own = f"jaxmia.kinds.{node.value}"
                assert name == own or name.startswith(own + "."), (
                    f"{name} names the kind {node.value!r} (line {node.lineno}); ask the registry"
                )


def test_a_kind_provides_what_the_protocol_names():
    from jaxmia import kinds
    from jaxmia.kinds.base import Kind

    wanted = [n for n in dir(Kind) if not n.startswith("_")]
    for kind in kinds.all_kinds():
        missing = [n for n in wanted if not hasattr(kind, n)]
        assert not missing, f"{kind.name} lacks {missing}"
