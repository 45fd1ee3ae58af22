"""The run folder: user files are never touched, one writer, chunks that cannot be misread."""

from __future__ import annotations

import hashlib
import json
import os
from functools import partial

import numpy as np
import pytest

from jaxmia.errors import UserError
from jaxmia.runs import products
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import CALIBRATION, Job
from jaxmia.runs.store import RunStore, check_output_path

IDENTITY = {
    "results_hash": "abc123",
    "jaxmia_version": "test",
    "data_fingerprint": "data-1",
    "hashed_keys": ["seed", "lr"],
    "config": {"seed": 0, "lr": 0.1, "alpha": 0.05},
    "execution": {"conv": "im2col", "strategy": "map", "backend": "cpu"},
}


def outputs(n=4, t=1, c=5, seed=0) -> ModelOutputs:
    rng = np.random.default_rng(seed)
    jobs = [Job(CALIBRATION, r, m) for r in range(n // 2) for m in (True, False)]
    return ModelOutputs.for_jobs(
        jobs,
        loss=rng.random((n, t)),
        logits=rng.normal(size=(n, t, c)),
        train_accuracy=rng.random(n),
        test_accuracy=rng.random(n),
        epoch_loss=rng.random((n, 3)),
    )


PRODUCTS = ("config.yaml", "results.json", "losses.npz", "roc.png")


def open_store(path, identity=IDENTITY, **kw) -> RunStore:
    return RunStore.open(path, identity, product_files=PRODUCTS, **kw)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_jaxmia_did_not_make_is_never_touched(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("thesis")
    for fresh in (False, True):
        with pytest.raises(UserError, match="not a jaxmia run folder"):
            open_store(precious, fresh=fresh)
    assert snapshot(precious) == {precious.joinpath("thesis.tex").relative_to(precious): b"thesis"}
    # A run.json that is not ours is no pass either.
    (precious / "run.json").write_text('{"results_hash": "abc123"}')
    with pytest.raises(UserError, match="not a jaxmia run's run.json"):
        open_store(precious, fresh=True)
    assert (precious / "thesis.tex").read_text() == "thesis"


def test_fresh_deletes_only_what_jaxmia_wrote(tmp_path):
    run = tmp_path / "run"
    store = open_store(run)
    store.save_chunk(outputs())
    store.close()
    for name in ("results.json", "losses.npz", "roc.png", "config.yaml"):
        (run / name).write_text("old product")
    (run / "notes.txt").write_text("mine")
    (run / "chunks" / "my-copy.npz").write_text("mine too")
    store = open_store(run, fresh=True)
    store.close()
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == [".lock", "chunks", "chunks/my-copy.npz", "notes.txt", "run.json"]


def test_fresh_leaves_another_runs_chunk_and_says_so_as_a_plain_start_does(tmp_path, capsys):
    other = tmp_path / "other"
    store = open_store(other, {**IDENTITY, "results_hash": "other"})
    foreign = store.save_chunk(outputs(seed=1))
    store.close()
    run = tmp_path / "run"
    store = open_store(run)
    own = store.save_chunk(outputs())
    store.close()
    copied = run / "chunks" / foreign.name
    copied.write_bytes(foreign.read_bytes())
    capsys.readouterr()
    lines = {}
    for fresh in (False, True):
        store = open_store(run, fresh=fresh)
        store.load()
        store.close()
        lines[fresh] = capsys.readouterr().err.strip().splitlines()
        assert copied.read_bytes() == foreign.read_bytes()
    assert own.exists() is False  # --fresh deleted this run's own chunk
    assert (
        lines[True]
        == lines[False]
        == [
            f"jaxmia: warning: {foreign.name} belongs to another run (run hash 'other', this "
            "run's is abc123); left as it is, not used"
        ]
    )


def test_another_run_is_refused_naming_what_changed(tmp_path):
    open_store(tmp_path / "run").close()
    data = {**IDENTITY, "results_hash": "zzz", "data_fingerprint": "data-2"}
    with pytest.raises(UserError, match=r"the data changed \(fingerprint 'data-1' -> 'data-2'\)"):
        open_store(tmp_path / "run", data)
    cfg = {**IDENTITY, "results_hash": "zzz", "config": {**IDENTITY["config"], "lr": 0.2}}
    with pytest.raises(UserError, match=r"the configuration changed \(lr: 0.1 -> 0.2\)"):
        open_store(tmp_path / "run", cfg)
    ex = {**IDENTITY, "execution": {**IDENTITY["execution"], "conv": "xla"}}
    with pytest.raises(UserError, match=r"the computation changed \(conv: 'im2col' -> 'xla'\)"):
        open_store(tmp_path / "run", ex)
    open_store(tmp_path / "run", ex, fresh=True).close()


def test_one_process_at_a_time(tmp_path):
    first = open_store(tmp_path / "run")
    with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
        open_store(tmp_path / "run")
    first.close()
    open_store(tmp_path / "run").close()


def test_chunks_round_trip_exactly(tmp_path):
    store = open_store(tmp_path / "run")
    a, b = outputs(seed=1), outputs(n=2, seed=2)
    b = ModelOutputs.for_jobs(
        [Job(1, 0, True), Job(1, 0, False)], **{f: getattr(b, f) for f in FIELDS}
    )
    store.save_chunk(a)
    store.save_chunk(b)
    got = store.load()
    want = ModelOutputs.concat([a, b])
    assert sorted(got.jobs()) == sorted(want.jobs())
    for f in ModelOutputs.fields():
        np.testing.assert_array_equal(getattr(got.select(want.jobs()), f), getattr(want, f))


FIELDS = ("loss", "logits", "train_accuracy", "test_accuracy", "epoch_loss")


def test_flipped_bits_and_truncations_never_raise_or_load_wrong_values(tmp_path, capsys):
    store = open_store(tmp_path / "run")
    good = outputs(seed=3)
    path = store.save_chunk(good)
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    bits = rng.choice(8 * len(data), size=300, replace=False)
    cuts = np.unique(np.linspace(0, len(data) - 1, 40).astype(int))
    damaged = [
        bytes(data[: b // 8]) + bytes([data[b // 8] ^ (1 << (b % 8))]) + data[b // 8 + 1 :]
        for b in bits
    ] + [data[:cut] for cut in cuts]
    for blob in damaged:
        for p in store.chunk_dir.iterdir():
            p.unlink()
        path.write_bytes(blob)
        got = store.load()  # must not raise
        assert got is None  # the checksum catches every change
        assert path.with_name(path.name + ".corrupt").exists() and not path.exists()
    assert capsys.readouterr().err.count("is damaged") == len(damaged)
    path.write_bytes(data)
    for p in store.chunk_dir.glob("*.corrupt"):
        p.unlink()
    np.testing.assert_array_equal(store.load().loss, good.loss)


def test_a_chunk_of_another_run_is_skipped_never_renamed(tmp_path, capsys):
    # Another run's chunk is not damaged: it is left where it is, as it is.
    store = open_store(tmp_path / "a")
    path = store.save_chunk(outputs())
    other = open_store(tmp_path / "b", {**IDENTITY, "results_hash": "other"})
    copy = other.chunk_dir / path.name
    copy.write_bytes(path.read_bytes())
    assert other.load() is None
    assert copy.read_bytes() == path.read_bytes()
    assert not list(other.chunk_dir.glob("*.corrupt"))
    err = capsys.readouterr().err
    assert "another run" in err and "damaged" not in err


def test_output_paths_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="NUL"):
        check_output_path(str(tmp_path) + "/a\x00b", "run")
    with pytest.raises(UserError, match="folder name over 255 bytes"):
        check_output_path(tmp_path / ("x" * 300), "run")
    with pytest.raises(UserError, match="keep --output-dir and --run-name"):
        check_output_path(tmp_path.joinpath(*["y" * 200] * 25), "run")
    assert not any(tmp_path.iterdir())


def test_products_are_one_set_with_results_last(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    arrays = {"member_losses": np.arange(3, dtype=np.float32)}

    def figures(folder):
        (folder / "roc.png").write_bytes(b"png")
        return [folder / "roc.png"]

    write = partial(
        products.write_products,
        run,
        figure_files=("roc.png",),
        arrays_name="losses.npz",
        synthetic=False,
    )
    res = write(config={"a": 1}, arrays=arrays, results={"n": 3}, figures=figures)
    digest = hashlib.sha256((run / "losses.npz").read_bytes()).hexdigest()
    assert res["losses_sha256"] == digest
    assert json.loads((run / "results.json").read_text())["losses_sha256"] == digest

    def broken(folder):  # a kill while the figures are drawn
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(config={"a": 2}, arrays=arrays, results={"n": 4}, figures=broken)
    assert not (run / "results.json").exists()  # never results of one state beside another's
    write(config={"a": 2}, arrays=arrays, results={"n": 4}, figures=None)
    assert not (run / "roc.png").exists()  # save_plots: false removes old figures
    assert json.loads((run / "results.json").read_text())["n"] == 4


def test_model_outputs_refuse_malformed_columns():
    good = outputs().to_arrays()
    with pytest.raises(ValueError, match="missing fields"):
        ModelOutputs.from_arrays({k: v for k, v in good.items() if k != "logits"})
    with pytest.raises(ValueError, match="field loss is float64"):
        ModelOutputs.from_arrays({**good, "loss": good["loss"].astype(np.float64)})
    with pytest.raises(ValueError, match="rows"):
        ModelOutputs.from_arrays({**good, "train_accuracy": good["train_accuracy"][:2]})


# ---------------------------------------------------------------- nothing followed out of a folder


def _outside(tmp_path, name="precious"):
    """A file of the user's outside every run folder, and its bytes."""
    f = tmp_path / "elsewhere" / name
    f.parent.mkdir(exist_ok=True)
    f.write_bytes(b"the user's own bytes")
    return f


def test_the_lock_is_never_opened_through_a_symbolic_link(tmp_path):
    run = tmp_path / "run"
    open_store(run).close()
    victim = _outside(tmp_path)
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match=r"\.lock is a symbolic link"):
        open_store(run)
    assert victim.read_bytes() == b"the user's own bytes"


def test_chunks_linked_out_of_the_run_folder_are_refused(tmp_path):
    # Two runs whose chunks/ link to one scratch folder: B must not touch A's chunks.
    scratch = tmp_path / "scratch"
    a = open_store(tmp_path / "a")
    a.save_chunk(outputs())
    a.close()
    (tmp_path / "a" / "chunks").rename(scratch)  # A's chunks, moved to the scratch folder
    (tmp_path / "a" / "chunks").symlink_to(scratch)
    before = {p.name: p.read_bytes() for p in scratch.iterdir()}
    run_b = tmp_path / "b"
    open_store(run_b, {**IDENTITY, "results_hash": "b"}).close()
    (run_b / "chunks").rmdir()
    (run_b / "chunks").symlink_to(scratch)
    for fresh in (False, True):
        with pytest.raises(UserError, match="chunks.*outside the run folder"):
            open_store(run_b, {**IDENTITY, "results_hash": "b"}, fresh=fresh)
    assert {p.name: p.read_bytes() for p in scratch.iterdir()} == before
    # A link that stays inside the run folder is the user's layout, and fine.
    inside = tmp_path / "c"
    open_store(inside).close()
    (inside / "chunks").rename(inside / "own-chunks")
    (inside / "chunks").symlink_to(inside / "own-chunks")
    store = open_store(inside)
    store.save_chunk(outputs())
    assert len(list((inside / "own-chunks").iterdir())) == 1
    store.close()


def test_a_chunk_file_linked_elsewhere_is_neither_read_renamed_nor_deleted_through(
    tmp_path, capsys
):
    victim = _outside(tmp_path, "chunk-s0-r0000000m1-r0000001m0." + "0" * 64 + ".npz")
    store = open_store(tmp_path / "run")
    link = store.chunk_dir / victim.name
    link.symlink_to(victim)
    assert store.load() is None
    assert link.is_symlink() and victim.read_bytes() == b"the user's own bytes"
    assert "symbolic link" in capsys.readouterr().err
    store.close()
    open_store(tmp_path / "run", fresh=True).close()  # --fresh removes the link, not its target
    assert not link.is_symlink() and victim.read_bytes() == b"the user's own bytes"


def test_products_replace_links_and_never_write_through_them(tmp_path):
    run = tmp_path / "run"
    open_store(run).close()
    victims = {}
    for name in ("config.yaml", "results.json", "losses.npz", "roc.png", "run.json"):
        victims[name] = _outside(tmp_path, name)
        if name != "run.json":
            (run / name).symlink_to(victims[name])

    def figures(folder):
        from jaxmia import fileio

        return [fileio.atomic_write_bytes(folder / "roc.png", b"png")]

    products.write_products(
        run,
        config={"a": 1},
        arrays={"x": np.zeros(2)},
        results={"n": 1},
        figures=figures,
        figure_files=("roc.png",),
        synthetic=False,
        arrays_name="losses.npz",
    )
    for name, victim in victims.items():
        assert victim.read_bytes() == b"the user's own bytes", name
    for name in ("config.yaml", "results.json", "losses.npz", "roc.png"):
        assert (run / name).is_file() and not (run / name).is_symlink(), name


def test_only_jaxmias_own_temporaries_are_removed(tmp_path):
    run = tmp_path / "run"
    open_store(run).close()
    chunk = "chunk-s0-r0000000m1-r0000001m0." + "0" * 64 + ".npz"
    ours = [run / ".results.json.x1y2z3w4.tmp", run / "chunks" / f".{chunk}.ab12cd34.tmp"]
    mine = [run / ".notes.tmp", run / ".thesis.tex.ab12cd34.tmp", run / "chunks" / ".mine.tmp"]
    for p in ours + mine:
        p.write_text("x")
    open_store(run).close()
    assert [p.exists() for p in ours] == [False, False]
    assert all(p.exists() for p in mine)


def test_fresh_deletes_only_the_products_it_is_given(tmp_path):
    # The run folder's caller names the products of the recorded kind and of the new one;
    # a file another kind would write is the user's here.
    run = tmp_path / "run"
    open_store(run).close()
    for name in PRODUCTS + ("targets.csv", "vulnerability.png", "population.npz"):
        (run / name).write_text("x")
    open_store(run, fresh=True).close()
    left = sorted(p.name for p in run.iterdir())
    assert left == sorted(
        [".lock", "chunks", "run.json", "targets.csv", "vulnerability.png", "population.npz"]
    )


def test_a_dangling_link_as_the_run_folder_is_one_clear_line(tmp_path):
    (tmp_path / "run").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match="symbolic link to .*gone.*does not exist"):
        open_store(tmp_path / "run")


def test_a_read_only_run_folder_is_one_line(tmp_path, read_only_lock):
    with pytest.raises(UserError, match="cannot lock .*Read-only file system"):
        open_store(tmp_path / "run")


def test_the_path_check_leaves_room_for_the_longest_name_jaxmia_writes(tmp_path):
    from jaxmia.runs import store as store_module

    room = store_module.PATH_MAX_BYTES - store_module.LONGEST_SUFFIX_BYTES
    base = os.fsencode(os.path.abspath(tmp_path))
    # Folders of at most 200 bytes down to a run folder of exactly `room` bytes.
    parts, left = [], room - len(base) - 1 - len(b"run")
    while left > 0:
        n = min(200, left - 1) if left > 201 else left - 1
        if n <= 0:
            break
        parts.append("d" * n)
        left -= n + 1
    out = tmp_path.joinpath(*parts)
    name = "r" * (3 + left) if left > 0 else "run"
    run = check_output_path(out, name)
    assert len(os.fsencode(os.path.abspath(run))) == room
    with pytest.raises(UserError, match="keep --output-dir and --run-name"):
        check_output_path(out, name + "x")
    # The longest file jaxmia writes there fits: a chunk's temporary file.
    (run / "chunks").mkdir(parents=True)
    longest = run / "chunks" / store_module.longest_names()[-1]
    longest.write_bytes(b"")
    assert len(os.fsencode(os.path.abspath(longest))) == store_module.PATH_MAX_BYTES


def test_a_changed_computation_says_which_keys_restore_it():
    # The execution record's fields are not config keys: each change says what to set.
    run_ex = {"conv": "xla", "strategy": "vmap", "backend": "gpu", "models_per_device": 16}
    old = {**IDENTITY, "execution": {**run_ex, "jax": "0.7.0"}}
    new = {**IDENTITY, "execution": {**run_ex, "jax": "0.7.0", "models_per_device": 8}}
    from jaxmia.runs.store import _describe_change

    text = _describe_change(old, new)
    assert "models_per_device" not in text
    assert "models_per_chunk" in text and "16" in text
    text = _describe_change(old, {**IDENTITY, "execution": {**run_ex, "jax": "0.8.0"}})
    assert "install jax 0.7.0" in text
    text = _describe_change(old, {**IDENTITY, "execution": {**old["execution"], "conv": "im2col"}})
    assert "conv: xla" in text


def test_run_json_as_a_link_is_replaced_never_written_through(tmp_path):
    run = tmp_path / "run"
    open_store(run).close()
    outside = tmp_path / "elsewhere" / "run.json"
    outside.parent.mkdir()
    outside.write_bytes((run / "run.json").read_bytes())
    (run / "run.json").unlink()
    (run / "run.json").symlink_to(outside)
    before = outside.read_bytes()
    open_store(run, {**IDENTITY, "config": {**IDENTITY["config"], "alpha": 0.1}}).close()
    assert outside.read_bytes() == before
    assert (run / "run.json").is_file() and not (run / "run.json").is_symlink()
    assert json.loads((run / "run.json").read_text())["config"]["alpha"] == 0.1
