"""The attack library as a whole: the border it keeps (numpy and scipy, never JAX or matplotlib)."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ("scores", "thresholds", "metrics", "bounds", "summary")


def _modules_after(statement: str) -> list[str]:
    """Every module name a fresh interpreter holds after running ``statement``."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_library_imports_neither_jax_nor_matplotlib():
    loaded = _modules_after("; ".join(f"import jaxmia.attack.{m}" for m in MODULES))
    assert {m.split(".")[0] for m in loaded} & {"jax", "jaxlib", "flax", "matplotlib"} == set()


def test_the_package_alone_loads_neither_its_modules_nor_scipy():
    loaded = _modules_after("import jaxmia.attack")
    assert [m for m in loaded if m.startswith(("scipy", "jaxmia.attack."))] == []
