"""Golden run folders: ``jaxmia analyze`` must reproduce their products byte for byte.

``tests/data/golden/<kind>/`` holds one tiny finished run of each experiment kind
(synthetic data, made with jaxmia 0.2.0): its ``run.json``, its arrays file, and
the ``results.json`` (and ``targets.csv``) the run wrote.  ``expected/`` beside
them holds what ``jaxmia analyze`` wrote for other settings.  Any change to the
statistics, the analyses or the way products are assembled shows up here as a
changed byte, so a refactor that should change nothing is proved to change
nothing, and a deliberate change is seen value by value.

After a deliberate change, ``python tests/test_golden.py --regenerate`` rewrites
``expected/`` and the kinds' ``results.json`` and prints every value that
changed, old -> new, for the commit message and the closing note.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
KINDS = ("single_target", "targets", "population")
ARRAYS = {"single_target": "losses.npz", "targets": "targets.npz", "population": "population.npz"}
TABLES = {"targets": ("targets.csv", "attacks.csv")}
# Other settings of the statistics: (name, analyze's keyword arguments).
VARIANTS = (
    ("lira-lira", dict(score="lira", threshold_rule="lira")),
    ("hinge-gaussian", dict(score="hinge", threshold_rule="gaussian", alpha=0.1)),
    ("loss-conformal", dict(threshold_rule="conformal", alpha=0.4, confidence=0.9)),
    ("lira-confident", dict(score="lira", threshold_rule="confident", alpha=0.45, delta=1e-3)),
)


def _copy(kind: str, into: Path, with_results: bool = True) -> Path:
    src, run = GOLDEN / kind, into / kind
    run.mkdir(parents=True)
    names = ["run.json", ARRAYS[kind]] + (["results.json"] if with_results else [])
    for name in names:
        shutil.copy(src / name, run / name)
    return run


def _analyze(run: Path, **settings) -> None:
    from jaxmia.analyze import analyze

    analyze(run, **settings)


def _products(run: Path, kind: str) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("results.json", *TABLES.get(kind, ()))}


def _expected(kind: str, variant: str | None) -> dict[str, bytes]:
    folder = GOLDEN / kind if variant is None else GOLDEN / kind / "expected" / variant
    return {name: (folder / name).read_bytes() for name in ("results.json", *TABLES.get(kind, ()))}


@pytest.mark.parametrize("kind", KINDS)
def test_analyze_reproduces_the_run_byte_for_byte(tmp_path, kind):
    run = _copy(kind, tmp_path)
    _analyze(run)
    got, want = _products(run, kind), _expected(kind, None)
    for name in want:
        assert got[name] == want[name], f"{kind}/{name} changed"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("variant", "settings"), VARIANTS, ids=[v for v, _ in VARIANTS])
def test_analyze_with_other_settings_matches_its_golden_products(tmp_path, kind, variant, settings):
    run = _copy(kind, tmp_path)
    _analyze(run, **settings)
    got, want = _products(run, kind), _expected(kind, variant)
    for name in want:
        assert got[name] == want[name], f"{kind}/{variant}/{name} changed"


@pytest.mark.parametrize("kind", KINDS)
def test_analyze_without_results_json_recomputes_every_statistic(tmp_path, kind):
    # The arrays alone decide every number; only the run's own record (timing,
    # devices) can be missing when results.json is gone: these folders predate
    # record.json, and the results say the record is missing rather than invent it.
    run = _copy(kind, tmp_path, with_results=False)
    _analyze(run)
    from jaxmia.runs.products import RUN_KEYS  # how the run went: timing, devices, versions

    got = json.loads((run / "results.json").read_text())
    want = json.loads(_expected(kind, None)["results.json"])
    missing, *rest = got.pop("warnings")
    assert missing.startswith("the run's record is missing (compile_seconds, "), missing
    assert rest == want.pop("warnings")
    assert {k: v for k, v in got.items() if k not in RUN_KEYS} == {
        k: v for k, v in want.items() if k not in RUN_KEYS
    }


# ---------------------------------------------------------------- regeneration


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _changes(old: bytes, new: bytes, where: str) -> list[str]:
    try:
        a, b = dict(_flatten(json.loads(old))), dict(_flatten(json.loads(new)))
    except ValueError:  # a CSV table: say whether it changed
        return [] if old == new else [f"{where}: changed"]
    return [
        f"{where}: {key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key, "<absent>") != b.get(key, "<absent>")
    ]


def regenerate() -> int:
    """Rewrites the golden products with this jaxmia; prints every changed value."""
    import tempfile

    changed = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            for variant, settings in ((None, {}), *VARIANTS):
                run = _copy(kind, Path(tmp) / (variant or "run"))
                _analyze(run, **settings)
                folder = GOLDEN / kind if variant is None else GOLDEN / kind / "expected" / variant
                folder.mkdir(parents=True, exist_ok=True)
                for name, data in _products(run, kind).items():
                    path = folder / name
                    old = path.read_bytes() if path.exists() else b"{}"
                    changed += _changes(old, data, f"{kind}/{variant or 'run'}/{name}")
                    path.write_bytes(data)
    print("\n".join(changed) if changed else "no value changed")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_golden.py --regenerate")
    sys.exit(regenerate())
