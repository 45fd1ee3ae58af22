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


def test_orphaned_temporaries_are_removed_and_others_kept(tmp_path):
    run = tmp_path / "run"
    open_store(run).close()
    (run / ".results.json.x1y2.tmp").write_text("half")
    (run / "chunks" / ".chunk-s0.npz.abc.tmp").write_text("half")
    (run / "keep.tmp").write_text("not ours")
    open_store(run).close()
    assert not (run / ".results.json.x1y2.tmp").exists()
    assert not (run / "chunks" / ".chunk-s0.npz.abc.tmp").exists()
    assert (run / "keep.tmp").exists()


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


def test_a_chunk_of_another_run_is_set_aside(tmp_path):
    store = open_store(tmp_path / "a")
    path = store.save_chunk(outputs())
    other = open_store(tmp_path / "b", {**IDENTITY, "results_hash": "other"})
    copy = other.chunk_dir / path.name
    copy.write_bytes(path.read_bytes())
    assert other.load() is None
    assert copy.with_name(copy.name + ".corrupt").exists()


def test_output_paths_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="NUL"):
        check_output_path(str(tmp_path) + "/a\x00b", "run")
    with pytest.raises(UserError, match="folder name over 255 bytes"):
        check_output_path(tmp_path / ("x" * 300), "run")
    with pytest.raises(UserError, match="keep --output-dir and --run-name under 4000 bytes"):
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
