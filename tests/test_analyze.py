"""``jaxmia analyze`` on run folders a user may have damaged, edited, mixed up or left half
done: one line and exit code 2 for what it cannot use, and a true report of what it can."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxmia import analyze

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
ARRAYS = {"single_target": "losses.npz", "targets": "targets.npz", "population": "population.npz"}
KINDS = tuple(ARRAYS)


def golden_run(kind: str, into: Path, with_results: bool = True) -> Path:
    """A copy of the golden run folder of ``kind`` (run.json, arrays, results.json)."""
    run = into / kind
    run.mkdir(parents=True)
    for name in ("run.json", ARRAYS[kind]) + (("results.json",) if with_results else ()):
        shutil.copy(GOLDEN / kind / name, run / name)
    return run


def load(run: Path, kind: str) -> dict:
    with np.load(run / ARRAYS[kind]) as z:
        return {k: z[k] for k in z.files}


def save(run: Path, kind: str, arrays: dict) -> None:
    np.savez(run / ARRAYS[kind], **arrays)


def one_line(capsys, rc: int, *argv) -> str:
    """Runs ``jaxmia analyze`` in this process; asserts the exit code and a one-line stderr."""
    got = analyze.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == rc, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- nothing left to analyse


def _no_model_left(kind: str, a: dict) -> dict:
    """The arrays of a run whose every model diverged (on_nonfinite: skip), or, for many
    targets, one whose only used model cannot be both IN and OUT of a target."""
    if kind == "single_target":
        a["member_losses"][:] = np.nan
        a["member_logits"][:] = np.nan
        a["finite"][:, 0] = False
        a["round_used"][:] = False
    elif kind == "targets":
        a["model_used"][1:] = False
    else:
        for who in ("member", "nonmember"):
            a[f"{who}_losses"][:] = np.nan
            a[f"{who}_logits"][:] = np.nan
        a["model_used"][:] = False
    return a


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_to_analyse_is_one_line_and_exit_2_in_every_kind(tmp_path, capsys, kind):
    run = golden_run(kind, tmp_path)
    save(run, kind, _no_model_left(kind, load(run, kind)))
    line = one_line(capsys, 2, run)
    assert line.startswith("jaxmia analyze: error: nothing to analyse: "), line
    assert "lower lr" in line
