"""``jaxmia analyze`` on run folders a user may have damaged, edited, mixed up or left half
done: one line and exit code 2 for what it cannot use, and a true report of what it can."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------- unverified data


def _titles(fig) -> list[str]:
    """Every title text of a figure: its suptitle, its subfigures' and its axes'."""
    out = []
    for part in [fig, *fig.subfigs]:
        if getattr(part, "_suptitle", None) is not None:
            out.append(part._suptitle.get_text())
    out += [ax.get_title() for ax in fig.axes]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_unverified_data_is_said_everywhere_synthetic_data_is(tmp_path, capsys, monkeypatch, kind):
    # A run on a copy made with JAXMIA_UNVERIFIED_DATA=1: its run.json's fingerprint says
    # so, and so must the console, results.json and every figure's title.
    from jaxmia import plotting

    run = golden_run(kind, tmp_path)
    ident = json.loads((run / "run.json").read_text())
    fingerprint = "cifar100:unverified:sha256=" + "ab" * 32
    ident["data_fingerprint"] = fingerprint
    (run / "run.json").write_text(json.dumps(ident))
    a = load(run, kind)
    a["synthetic"] = np.array(False)
    save(run, kind, a)
    drawn = []
    real_save = plotting.save_png

    def keep(fig, path):
        drawn.append((path, _titles(fig)))
        return real_save(fig, path)

    monkeypatch.setattr(plotting, "save_png", keep)
    for module in ("single_target", "targets", "population"):
        monkeypatch.setattr(f"jaxmia.kinds.{module}.figures.save_png", keep, raising=False)
    assert analyze.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "[UNVERIFIED DATA]" in out
    res = json.loads((run / "results.json").read_text())
    assert res["unverified"] is True and res["data_fingerprint"] == fingerprint
    assert drawn
    for path, titles in drawn:
        assert any("[UNVERIFIED DATA]" in t for t in titles), (path.name, titles)
    assert (run / "config.yaml").read_text().startswith("# UNVERIFIED DATA")
