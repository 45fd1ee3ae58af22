"""``jaxmia analyze`` on run folders a user may have damaged, edited, mixed up or left half
done: one line and exit code 2 for what it cannot use, and a true report of what it can."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxmia import analyze
from jaxmia.runs.products import RUN_KEYS

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
    ident["config"]["save_plots"] = True  # the golden runs draw none
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


# ---------------------------------------------------------------- saved arrays are input too


def _set(key, index, value):
    def damage(a):
        a[key] = a[key].copy()
        a[key][index] = value

    return damage


def _replace(key, make):
    def damage(a):
        a[key] = make(a[key])

    return damage


def _drop(key):
    def damage(a):
        del a[key]

    return damage


def _both(*damages):
    def damage(a):
        for d in damages:
            d(a)

    return damage


# (kind, what was done to the arrays, words the one line must hold)
DAMAGES = [
    ("single_target", _replace("member_losses", lambda v: v[:5]), "member_losses"),
    ("single_target", _set("member_logits", (0, 1), np.nan), "member_logits has a non-finite"),
    ("single_target", _set("eval_nonmember_losses", 1, np.inf), "eval_nonmember_losses"),
    ("single_target", _replace("target_label", lambda v: np.array(5, v.dtype)), "target_label"),
    ("single_target", _set("round_used", 2, False), "round_used"),
    ("single_target", _replace("finite", lambda v: v.astype(np.float32)), "finite must be bool"),
    ("single_target", _drop("eval_used"), "lack eval_used"),
    (
        "single_target",
        _both(
            _replace("member_logits", lambda v: v[:, :4]),
            _replace("nonmember_logits", lambda v: v[:, :4]),
            _replace("eval_member_logits", lambda v: v[:, :4]),
            _replace("eval_nonmember_logits", lambda v: v[:, :4]),
            _replace("class_names", lambda v: v[:4]),
        ),
        "C=5",  # run.json's num_classes
    ),
    ("single_target", _set("train_accuracy", (0, 0), 1.5), "train_accuracy"),
    ("single_target", _replace("target_image", lambda v: v[..., :2]), "target_image"),
    ("targets", _replace("targets", lambda v: v[::-1].copy()), "run.json"),
    ("targets", _replace("membership", lambda v: v.astype(np.int8)), "membership must be bool"),
    ("targets", _set("logits", (3, 1, 0), np.nan), "logits has a non-finite"),
    ("targets", _set("target_labels", 0, -1), "target_labels"),
    ("targets", _set("targets", 1, 0), "targets"),
    ("targets", _set("eval_losses", (0, 0), np.nan), "eval_losses"),
    ("population", _set("member_labels", (0, 3), 7), "member_labels"),
    (
        "population",
        _set("nonmember_logits", (1, 2, 0), np.inf),
        "nonmember_logits has a non-finite",
    ),
    ("population", _set("member_rows", (0, 0), -3), "member_rows"),
    (
        "population",
        _replace("model_used", lambda v: v.astype(np.float32)),
        "model_used must be bool",
    ),
    ("population", _set("test_accuracy", 1, -0.5), "test_accuracy"),
]


@pytest.mark.parametrize(
    ("kind", "damage", "words"), DAMAGES, ids=[f"{k}-{w}" for k, _, w in DAMAGES]
)
def test_damaged_arrays_are_refused_with_one_line_naming_the_file(
    tmp_path, capsys, kind, damage, words
):
    run = golden_run(kind, tmp_path)
    a = load(run, kind)
    damage(a)
    save(run, kind, a)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    line = one_line(capsys, 2, run, "--no-plots")
    assert line.startswith(f"jaxmia analyze: error: {run / ARRAYS[kind]}: "), line
    assert words in line, line
    # Nothing of the folder was touched.
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before


# One array shortened: the line names it, not an intact array that comes after it.
SHORTENED = [
    ("single_target", "member_losses", "l=8"),
    ("single_target", "eval_member_logits", "E=2"),
    ("population", "member_rows", "R=3"),
    ("population", "model_used", "R=3"),
    ("targets", "membership", "M=8"),
]


@pytest.mark.parametrize(("kind", "key", "size"), SHORTENED)
def test_a_shortened_array_is_the_one_named(tmp_path, capsys, kind, key, size):
    run = golden_run(kind, tmp_path)
    a = load(run, kind)
    a[key] = a[key][:-1]
    save(run, kind, a)
    line = one_line(capsys, 2, run, "--no-plots")
    assert f"{ARRAYS[kind]}: {key} must have shape" in line and size in line, line


def test_another_runs_targets_are_refused(tmp_path, capsys):
    # Another run's targets.npz with 3 other targets copied into this 4-target folder: it
    # would give results for 3 targets while config.yaml lists 4.
    run = golden_run("targets", tmp_path)
    a = load(run, "targets")
    for key in ("targets", "target_labels", "target_images"):
        a[key] = a[key][:3]
    a["targets"] = a["targets"] + 1
    for key in ("membership", "losses", "logits", "eval_membership", "eval_losses", "eval_logits"):
        a[key] = a[key][:, :3]
    save(run, "targets", a)
    line = one_line(capsys, 2, run, "--no-plots")
    assert "T=4" in line and "run.json" in line, line


def _other_population_rows(a):
    # The rows the seed-5 run draws: its population.npz copied into this seed-3 folder.
    from jaxmia.kinds.population.plan import PopulationPlan

    plan = PopulationPlan(5, 50_000, a["member_rows"].shape[1], 8)
    for r in range(len(a["member_rows"])):
        a["member_rows"][r], a["nonmember_rows"][r] = plan.sets(r)


def _with_population_points(points):
    def damage(a):
        m, e, c = len(a["membership"]), len(a["eval_membership"]), a["logits"].shape[-1]
        a["population_points"] = np.asarray(points, np.int32)
        a["population_labels"] = np.zeros(len(points), np.int32)
        a["population_logits"] = np.zeros((m, len(points), 1, c), np.float32)
        a["eval_population_logits"] = np.zeros((e, len(points), 1, c), np.float32)

    return damage


# Another run's arrays beside this run.json: (kind, what was done, words the line holds).
OTHER_RUNS = [
    # losses.npz of a target_index 12 run in this target_index 11 folder.
    ("single_target", _set("target_index", (), 12), "holds target 12"),
    ("population", _other_population_rows, "repetition 0 holds other member"),
    ("targets", _set("membership", (0, slice(None)), True), "membership of model 0"),
    ("targets", _with_population_points([7, 8]), "other population points"),
]


@pytest.mark.parametrize(
    ("kind", "damage", "words"), OTHER_RUNS, ids=[f"{k}-{w}" for k, _, w in OTHER_RUNS]
)
def test_another_runs_arrays_are_refused_in_every_kind(tmp_path, capsys, kind, damage, words):
    run = golden_run(kind, tmp_path)
    a = load(run, kind)
    if kind == "single_target":
        a["target_index"] = np.array(11, np.int32)  # what a run writes now
        save(run, kind, a)
        assert analyze.main([str(run), "--no-plots"]) == 0, capsys.readouterr().err
        capsys.readouterr()
    damage(a)
    save(run, kind, a)
    line = one_line(capsys, 2, run, "--no-plots")
    assert line.startswith(f"jaxmia analyze: error: {run / ARRAYS[kind]}: "), line
    assert words in line and "another run's" in line, line


# A training-set index beyond the training set (run.json's data: 50,000 images).
OUT_OF_RANGE = [
    ("population", _set("member_rows", (0, 0), 10**9), "member_rows must be below N=50000"),
    ("population", _set("nonmember_rows", (2, 5), 50_000), "nonmember_rows must be below"),
    ("targets", _set("targets", 0, 10**9), "targets must be below N=50000"),
    (
        "targets",
        _with_population_points([3, 10**9]),
        "population_points must be below N=50000",
    ),
    ("single_target", _set("target_index", (), 50_000), "target_index must be below N=50000"),
]


@pytest.mark.parametrize(
    ("kind", "damage", "words"), OUT_OF_RANGE, ids=[f"{k}-{w}" for k, _, w in OUT_OF_RANGE]
)
def test_indices_beyond_the_training_set_are_refused(tmp_path, capsys, kind, damage, words):
    run = golden_run(kind, tmp_path)
    a = load(run, kind)
    if kind == "single_target":
        a["target_index"] = np.array(11, np.int32)  # what a run writes now
    damage(a)
    save(run, kind, a)
    line = one_line(capsys, 2, run, "--no-plots")
    assert line.startswith(f"jaxmia analyze: error: {run / ARRAYS[kind]}: "), line
    assert words in line, line


def _as_run_writes_now(kind: str, a: dict) -> dict:
    """The golden arrays with the epoch-loss flags a run keeps now (every model trained
    with finite losses)."""
    if kind == "single_target":
        a["train_finite"] = np.ones_like(a["finite"])
        a["eval_train_finite"] = np.ones_like(a["eval_finite"])
    else:
        a["train_finite"] = np.ones_like(a["model_used"])
        if kind == "targets":
            a["eval_train_finite"] = np.ones_like(a["eval_model_used"])
    return a


# A finiteness flag edited to lie about finite outputs: (kind, the lie, words).
LYING_FLAGS = [
    (
        "single_target",
        _both(_set("finite", (0, 0), False), _set("round_used", 0, False)),
        "finite[0, 0] is False, yet its saved outputs are finite",
    ),
    (
        "single_target",
        _both(_set("eval_finite", (1, 1), False), _set("eval_used", 1, False)),
        "eval_finite[1, 1] is False",
    ),
    ("population", _set("model_used", 1, False), "model_used[1] is False"),
    ("targets", _set("model_used", 2, False), "model_used[2] is False"),
    ("targets", _set("eval_model_used", 0, False), "eval_model_used[0] is False"),
    ("targets", _set("train_finite", 3, False), "model_used[3] is True"),
]


@pytest.mark.parametrize(
    ("kind", "damage", "words"), LYING_FLAGS, ids=[f"{k}-{w[:20]}" for k, _, w in LYING_FLAGS]
)
def test_a_finiteness_flag_that_contradicts_its_values_is_refused(
    tmp_path, capsys, kind, damage, words
):
    run = golden_run(kind, tmp_path)
    a = _as_run_writes_now(kind, load(run, kind))
    save(run, kind, a)
    assert analyze.main([str(run), "--no-plots"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    damage(a)
    save(run, kind, a)
    line = one_line(capsys, 2, run, "--no-plots")
    assert line.startswith(f"jaxmia analyze: error: {run / ARRAYS[kind]}: "), line
    assert words in line and "contradicts" in line, line


def test_a_model_whose_training_diverged_is_left_out_though_its_outputs_are_finite(tmp_path):
    # What a run writes when a model's epoch loss was non-finite while x's loss was not.
    run = golden_run("single_target", tmp_path)
    a = _as_run_writes_now("single_target", load(run, "single_target"))
    a["train_finite"][0, 0] = a["finite"][0, 0] = a["round_used"][0] = False
    save(run, "single_target", a)
    res = analyze.analyze(run, save_plots=False)
    assert res["rounds_used"] == len(a["round_used"]) - 1
    assert res["skipped"] == ["calibration round 0, IN model"]


def test_the_training_set_size_comes_from_run_json_or_the_data_fingerprint():
    from jaxmia.runs.store import train_size

    assert train_size({"train_size": 123, "data_fingerprint": "cifar10:sha256=x"}) == 123
    assert train_size({"data_fingerprint": "synthetic:v1:classes=5:seed=1:n=700/90"}) == 700
    assert train_size({"data_fingerprint": "cifar100:sha256=ab"}) == 50_000
    assert train_size({"data_fingerprint": "cifar10:unverified:sha256=ab"}) is None
    assert train_size({}) is None


def test_a_grown_run_killed_before_its_products_reports_what_its_arrays_hold(tmp_path, capsys):
    # run.json asks for 16 rounds (a run that grew from 8 and was killed while training);
    # losses.npz holds the 8 of the run before. The results are those of the 8, and say so.
    run = golden_run("single_target", tmp_path)
    ident = json.loads((run / "run.json").read_text())
    ident["config"]["n_iterations"] = 16
    (run / "run.json").write_text(json.dumps(ident))
    assert analyze.main([str(run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    res = json.loads((run / "results.json").read_text())
    assert res["n_iterations"] == 8 and res["rounds_used"] == 8
    assert "Rounds used" not in out
    assert any("16" in w and "8" in w and "run.json" in w for w in res["warnings"])
    assert "n_iterations: 8" in (run / "config.yaml").read_text()


def with_record(run: Path) -> Path:
    """The folder with the record.json its run writes now (the golden folders predate it)."""
    res = json.loads((run / "results.json").read_text())
    (run / "record.json").write_text(json.dumps({k: res[k] for k in RUN_KEYS if k in res}))
    return run


@pytest.mark.parametrize("kind", KINDS)
def test_without_results_json_the_run_record_comes_back_from_record_json(tmp_path, kind):
    run = with_record(golden_run(kind, tmp_path))
    want = json.loads((run / "results.json").read_text())
    (run / "results.json").unlink()
    got = analyze.analyze(run, save_plots=False)
    assert {k: got.get(k) for k in RUN_KEYS} == {k: want[k] for k in RUN_KEYS}
    assert not any("record is missing" in w for w in got["warnings"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_without_any_record_says_so_instead_of_inventing_it(tmp_path, capsys, kind):
    run = golden_run(kind, tmp_path, with_results=False)
    assert analyze.main([str(run), "--no-plots"]) == 0
    res = json.loads((run / "results.json").read_text())
    lost = [k for k in RUN_KEYS if k not in ("results_hash", "jaxmia_version")]
    assert not set(lost) & set(res)
    note = f"the run's record is missing ({', '.join(lost)})"
    assert res["warnings"][0].startswith(note)
    assert note in capsys.readouterr().out
    assert not (run / "record.json").exists()  # analyze never writes the run's record


@pytest.mark.parametrize("kind", KINDS)
def test_without_results_json_the_run_record_comes_from_run_json(tmp_path, kind):
    run = golden_run(kind, tmp_path, with_results=False)
    ident = json.loads((run / "run.json").read_text())
    res = analyze.analyze(run, save_plots=False)
    assert res["results_hash"] == ident["results_hash"]
    assert res["jaxmia_version"] == ident["jaxmia_version"]


# ---------------------------------------------------------------- the folder's own safety


def test_a_read_only_run_folder_is_one_line(tmp_path, capsys, read_only_lock):
    run = golden_run("single_target", tmp_path)
    line = one_line(capsys, 2, run)
    assert "cannot lock" in line and "Read-only file system" in line


def test_analyze_never_writes_through_a_link_out_of_the_folder(tmp_path, capsys):
    run = golden_run("targets", tmp_path)
    ident = json.loads((run / "run.json").read_text())
    ident["config"]["save_plots"] = True
    (run / "run.json").write_text(json.dumps(ident))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    names = ("results.json", "config.yaml", "targets.csv", "vulnerability.png", "targets_roc.png")
    for name in names:
        (elsewhere / name).write_bytes(b"the user's own bytes")
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(elsewhere / name)
    assert analyze.main([str(run)]) == 0
    for name in names:
        assert (elsewhere / name).read_bytes() == b"the user's own bytes", name
        assert (run / name).is_file() and not (run / name).is_symlink(), name
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(elsewhere / "results.json")
    capsys.readouterr()
    line = one_line(capsys, 2, run)
    assert ".lock is a symbolic link" in line
    assert (elsewhere / "results.json").read_bytes() == b"the user's own bytes"


@pytest.mark.parametrize("kind", ["targets", "population"])
def test_a_folder_without_its_arrays_names_the_kinds_file(tmp_path, capsys, kind):
    run = golden_run(kind, tmp_path)
    (run / ARRAYS[kind]).unlink()
    line = one_line(capsys, 2, run)
    assert f"holds no {ARRAYS[kind]}" in line and "losses.npz" not in line
    assert "run the same jaxmia command again" in line


def test_paths_that_are_not_run_folders_say_what_they_are(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file, not a run folder" in one_line(capsys, 2, f)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert "symbolic link to" in one_line(capsys, 2, tmp_path / "link")
    assert "run folder not found" in one_line(capsys, 2, tmp_path / "nothing")


# ---------------------------------------------------------------- Ctrl-C


def _interrupt_during(monkeypatch, where: str):
    """Sends this process SIGINT from inside ``where``: "analysis" (before anything is
    written) or "figures" (after results.json was removed and config.yaml rewritten)."""
    import os
    import signal

    from jaxmia.kinds import base

    if where == "analysis":
        real = base.KindBase.figures

        def figures(self, arrays, **extra):
            os.kill(os.getpid(), signal.SIGINT)
            return real(self, arrays, **extra)

        monkeypatch.setattr(base.KindBase, "figures", figures)
    else:
        from jaxmia.runs import products

        real_write = products.fileio.atomic_write_text

        def write_text(path, text, *a, **kw):
            out = real_write(path, text, *a, **kw)
            if path.name == "config.yaml":
                os.kill(os.getpid(), signal.SIGINT)
            return out

        monkeypatch.setattr(products.fileio, "atomic_write_text", write_text)


@pytest.mark.parametrize("where", ["analysis", "figures"])
def test_ctrl_c_says_what_is_true_exits_130_and_a_rerun_restores_the_set(
    tmp_path, capsys, monkeypatch, where
):
    run = with_record(golden_run("single_target", tmp_path))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with monkeypatch.context() as m:
        _interrupt_during(m, where)
        line = one_line(capsys, 130, run)
    if where == "analysis":
        assert line == "jaxmia analyze: interrupted (SIGINT); nothing was written"
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"} == before
    else:
        assert "while rewriting the products" in line and "results.json" in line
        assert f"jaxmia analyze {run}" in line
        assert not (run / "results.json").exists()
    assert analyze.main([str(run)]) == 0
    # results.json was gone: the run's record comes back from record.json, every
    # statistic from the arrays.
    assert json.loads((run / "results.json").read_text()) == json.loads(before["results.json"])
    assert (run / "record.json").read_bytes() == before["record.json"]


def test_ctrl_c_while_starting_is_one_line(capsys, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(analyze, "build_parser", interrupted)
    assert analyze.main(["anywhere"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jaxmia analyze: interrupted while starting; nothing was written"]
