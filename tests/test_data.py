"""Tests of jaxmia.data: official CIFAR formats written here in tiny sizes, the
checks on damaged or missing files, the download path (with a fake network),
and the synthetic data set's determinism, balance and learnability."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from jaxmia import data
from jaxmia.data import DATASET_NAMES, Dataset, load_dataset
from jaxmia.errors import UserError

# The 100 real images travel with the tests (tests/data/README.md).
SHARED_DATA = Path(os.environ.get("JAXMIA_SHARED_DATA") or Path(__file__).resolve().parent / "data")

# The official fine label names, alphabetical, as in the archive's meta file.
FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house "
    "kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
    "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew "
    "skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank "
    "telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf "
    "woman worm"
).split()
CIFAR10 = "airplane automobile bird cat deer dog frog horse ship truck".split()


# --------------------------------------------------------------------------
# Writing the official formats.


def planes(images: np.ndarray) -> np.ndarray:
    """uint8[n, 32, 32, 3] -> uint8[n, 3072]: R plane, G plane, B plane, each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def pickled(obj) -> bytes:
    # The official files are Python 2 pickles; protocol 2 is what Python 2 wrote.
    return pickle.dumps(obj, protocol=2)


class Py2StylePickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official files: every string
    as a byte string (BINSTRING) and numpy's reconstructor as
    numpy.core.multiarray._reconstruct."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__
        if obj.__name__ == "_reconstruct":
            module = "numpy.core.multiarray"
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def as_py2_pickle(raw: bytes) -> bytes:
    out = io.BytesIO()
    Py2StylePickler(out, protocol=2).dump(pickle.loads(raw, encoding="bytes"))
    return out.getvalue()


def cifar100_members(train, train_labels, test, test_labels) -> dict[str, bytes]:
    def batch(name, images, labels):
        return pickled(
            {
                b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
                b"batch_label": name,
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [int(v) // 5 for v in labels],
                b"data": planes(images),
            }
        )

    meta = {
        b"fine_label_names": [s.encode() for s in FINE],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    }
    return {
        "train": batch(b"training batch 1 of 1", train, train_labels),
        "test": batch(b"testing batch 1 of 1", test, test_labels),
        "meta": pickled(meta),
    }


def cifar10_members(train, train_labels, test, test_labels) -> dict[str, bytes]:
    def batch(name, images, labels):
        return pickled(
            {
                b"batch_label": name,
                b"labels": [int(v) for v in labels],
                b"data": planes(images),
                b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
            }
        )

    out = {}
    for i, part in enumerate(np.array_split(np.arange(len(train)), 5)):
        out[f"data_batch_{i + 1}"] = batch(b"batch", train[part], train_labels[part])
    out["test_batch"] = batch(b"test", test, test_labels)
    meta = {b"label_names": [s.encode() for s in CIFAR10], b"num_cases_per_batch": 24}
    out["batches.meta"] = pickled(meta)
    return out


def write_folder(folder: Path, members: dict[str, bytes], trust=None) -> Path:
    """Writes the member files; with ``trust`` (a monkeypatch) they pass as the official ones."""
    folder.mkdir(parents=True)
    for name, raw in members.items():
        (folder / name).write_bytes(raw)
    if trust is not None:
        trust_members(trust, folder.parent.name, members)
    return folder


def trust_members(monkeypatch, name: str, members: dict[str, bytes]) -> None:
    """Puts the sizes and md5s of ``members`` in place of the official ones.

    Synthetic pixels can never have the official digests; tests that are about
    decoding make the loader take their files for official ones this way.
    """
    table = {m: (len(raw), hashlib.md5(raw).hexdigest()) for m, raw in members.items()}
    monkeypatch.setitem(data.MEMBER_CHECKSUMS, name, table)


def write_targz(path: Path, top: str, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def md5_of(raw: bytes) -> str:
    return hashlib.md5(raw).hexdigest()


def direct_stats(images: np.ndarray):
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return x.mean(0), x.std(0)


def one_line_error(fn, *needles) -> str:
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, msg
    return msg


@pytest.fixture(autouse=True)
def _own_environment(tmp_path, monkeypatch):
    """No setting or prepared tfds copy of the machine's may decide a test."""
    monkeypatch.delenv(data.UNVERIFIED_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds-default"))


@pytest.fixture(scope="module")
def first100():
    path = SHARED_DATA / "cifar100_train_first100.npz"
    assert path.is_file(), f"{path} is missing"
    with np.load(path) as z:
        return z["images"], z["fine_labels"]


@pytest.fixture(scope="module")
def cifar100_arrays(first100):
    """120 train images (the 100 real ones first) and 20 test images."""
    rng = np.random.default_rng(7)
    images, labels = first100
    extra = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    train = np.concatenate([images, extra])
    train_labels = np.concatenate([labels, rng.integers(0, 100, 20)])
    test = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 100, 20)
    return train, train_labels, test, test_labels


@pytest.fixture(scope="module")
def cifar100_member_bytes(cifar100_arrays):
    return cifar100_members(*cifar100_arrays)


@pytest.fixture(scope="module")
def cifar10_arrays():
    rng = np.random.default_rng(8)
    train = rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    return train, rng.integers(0, 10, 120), test, rng.integers(0, 10, 20)


def cifar100_archive(tmp_path, members, monkeypatch, match_md5=True) -> Path:
    path = write_targz(
        tmp_path / "d" / "cifar100" / "cifar-100-python.tar.gz", "cifar-100-python", members
    )
    if match_md5:
        monkeypatch.setitem(data.EXPECTED_MD5, "cifar100", md5(path))
    return path


# --------------------------------------------------------------------------
# CIFAR-100.


def test_label_constant_is_the_official_list():
    assert data.CIFAR100_FINE_LABELS == tuple(FINE)
    assert len(FINE) == 100 and sorted(FINE) == FINE
    assert data.CIFAR10_LABELS == tuple(CIFAR10)
    assert DATASET_NAMES == ("cifar100", "cifar10", "synthetic")


def test_planes_are_the_official_layout(first100):
    images, _ = first100
    rows = planes(images[:1])
    # Row-major R plane, then G, then B: pixel (y, x) of channel c sits at c*1024 + 32*y + x.
    for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1), (5, 7, 2), (31, 31, 2)]:
        assert rows[0, c * 1024 + 32 * y + x] == images[0, y, x, c]


def test_cifar100_folder_gives_the_real_images_in_hwc_and_official_order(
    tmp_path, monkeypatch, cifar100_arrays, cifar100_member_bytes, first100
):
    write_folder(
        tmp_path / "d" / "cifar100" / "cifar-100-python", cifar100_member_bytes, trust=monkeypatch
    )
    ds = load_dataset("cifar100", tmp_path / "d", download=False)
    train, train_labels, test, test_labels = cifar100_arrays
    images, labels = first100

    assert isinstance(ds, Dataset)
    assert (ds.name, ds.synthetic, ds.num_classes) == ("cifar100", False, 100)
    assert ds.train_images.dtype == np.uint8 and ds.train_images.shape == (120, 32, 32, 3)
    assert ds.test_images.dtype == np.uint8 and ds.test_images.shape == (20, 32, 32, 3)
    assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_images[:100], images)
    np.testing.assert_array_equal(ds.train_images, train)
    np.testing.assert_array_equal(ds.train_labels, train_labels)
    np.testing.assert_array_equal(ds.test_images, test)
    np.testing.assert_array_equal(ds.test_labels, test_labels)
    assert ds.train_labels[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]
    assert ds.train_labels[:100].tolist() == labels.tolist()
    assert ds.class_names[ds.train_labels[0]] == "cattle"
    assert [ds.class_names[i] for i in ds.train_labels[1:5]] == [
        "dinosaur",
        "apple",
        "boy",
        "aquarium_fish",
    ]
    mean, std = direct_stats(train)
    assert ds.mean.dtype == np.float32 and ds.std.dtype == np.float32
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.std, std, rtol=1e-6)
    assert ds.fingerprint.startswith("cifar100:")
    # The arrays are shared (and cached for synthetic data): nobody may change them.
    with pytest.raises(ValueError):
        ds.train_images[0, 0, 0, 0] = 1
    # Reading never writes into the data folder.
    assert sorted(p.name for p in (tmp_path / "d" / "cifar100").iterdir()) == ["cifar-100-python"]


def test_python2_style_pickles(tmp_path, monkeypatch, cifar100_arrays, cifar100_member_bytes):
    members = {k: as_py2_pickle(v) for k, v in cifar100_member_bytes.items()}
    assert b"numpy.core.multiarray\n_reconstruct" in members["train"]
    assert b"_codecs" not in members["train"]
    write_folder(tmp_path / "d" / "cifar100" / "cifar-100-python", members, trust=monkeypatch)
    ds = load_dataset("cifar100", tmp_path / "d", download=False)
    np.testing.assert_array_equal(ds.train_images, cifar100_arrays[0])
    assert ds.train_labels[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]
    assert ds.class_names == tuple(FINE)


def test_cifar100_targz_is_read_directly_and_matches_the_folder(
    tmp_path, monkeypatch, cifar100_member_bytes
):
    archive = cifar100_archive(tmp_path, cifar100_member_bytes, monkeypatch)
    from_archive = load_dataset("cifar100", tmp_path / "d", num_classes=100, download=False)
    # Nothing extracted next to it.
    assert list(archive.parent.iterdir()) == [archive]
    write_folder(
        tmp_path / "e" / "cifar100" / "cifar-100-python", cifar100_member_bytes, trust=monkeypatch
    )
    from_folder = load_dataset("cifar100", tmp_path / "e", download=False)
    for field in ("train_images", "train_labels", "test_images", "test_labels", "mean", "std"):
        np.testing.assert_array_equal(getattr(from_archive, field), getattr(from_folder, field))
    assert from_archive.class_names == from_folder.class_names == tuple(FINE)
    # The fingerprint names the data, not the form it was stored in.
    assert from_archive.fingerprint == from_folder.fingerprint
    assert from_archive.train_labels[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]


def test_fingerprint_changes_with_one_pixel(tmp_path, monkeypatch, cifar100_arrays):
    train, train_labels, test, test_labels = cifar100_arrays
    write_folder(
        tmp_path / "a" / "cifar100" / "cifar-100-python",
        cifar100_members(*cifar100_arrays),
        trust=monkeypatch,
    )
    a = load_dataset("cifar100", tmp_path / "a", download=False)
    changed = train.copy()
    changed[57, 3, 4, 1] ^= 1
    members = cifar100_members(changed, train_labels, test, test_labels)
    write_folder(tmp_path / "b" / "cifar100" / "cifar-100-python", members, trust=monkeypatch)
    b = load_dataset("cifar100", tmp_path / "b", download=False)
    assert a.fingerprint != b.fingerprint


# --------------------------------------------------------------------------
# CIFAR-10.


@pytest.mark.parametrize("form", ["folder", "targz"])
def test_cifar10_both_forms(tmp_path, monkeypatch, cifar10_arrays, form):
    members = cifar10_members(*cifar10_arrays)
    home = tmp_path / "d" / "cifar10"
    if form == "folder":
        write_folder(home / "cifar-10-batches-py", members, trust=monkeypatch)
    else:
        path = write_targz(home / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
        monkeypatch.setitem(data.EXPECTED_MD5, "cifar10", md5(path))
    ds = load_dataset("cifar10", tmp_path / "d", num_classes=10, download=False)
    train, train_labels, test, test_labels = cifar10_arrays
    assert (ds.name, ds.num_classes, ds.class_names) == ("cifar10", 10, tuple(CIFAR10))
    # The five batches are joined in order 1..5.
    np.testing.assert_array_equal(ds.train_images, train)
    np.testing.assert_array_equal(ds.train_labels, train_labels)
    np.testing.assert_array_equal(ds.test_images, test)
    np.testing.assert_array_equal(ds.test_labels, test_labels)
    mean, std = direct_stats(train)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.std, std, rtol=1e-6)
    assert ds.fingerprint.startswith("cifar10:")


# --------------------------------------------------------------------------
# Missing, damaged and foreign files.


@pytest.mark.parametrize(
    "name, file, digest",
    [
        ("cifar100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
        ("cifar10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    ],
)
def test_missing_data_says_what_to_put_where(tmp_path, monkeypatch, name, file, digest):
    def no_network(*args, **kwargs):
        raise AssertionError("must not try to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    where = tmp_path / "datasets" / name
    one_line_error(
        lambda: load_dataset(name, tmp_path / "datasets", download=False), file, digest, where
    )
    # The environment variable turns downloads off as well.
    monkeypatch.setenv("JAXMIA_NO_DOWNLOAD", "1")
    one_line_error(lambda: load_dataset(name, tmp_path / "datasets"), file, digest, "disabled")
    assert not (tmp_path / "datasets").exists()


def test_wrong_md5_names_the_file_and_both_checksums(tmp_path, monkeypatch, cifar100_member_bytes):
    archive = cifar100_archive(tmp_path, cifar100_member_bytes, monkeypatch, match_md5=False)
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "d", download=False),
        archive,
        "checksum mismatch",
        "eb9058c3a382ffc7106e4002c42a8d85",
        md5(archive),
    )


def test_truncated_targz(tmp_path, monkeypatch, cifar100_member_bytes):
    archive = cifar100_archive(tmp_path, cifar100_member_bytes, monkeypatch)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) * 2 // 3])
    # The checksum catches it first ...
    one_line_error(lambda: load_dataset("cifar100", tmp_path / "d", download=False), "checksum")
    # ... and were the checksum to pass, the gzip stream itself is found short.
    monkeypatch.setitem(data.EXPECTED_MD5, "cifar100", md5(archive))
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "d", download=False), archive, "truncated"
    )


def test_archive_without_a_member(tmp_path, monkeypatch, cifar100_member_bytes):
    members = dict(cifar100_member_bytes)
    del members["test"]
    cifar100_archive(tmp_path, members, monkeypatch)
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "d", download=False), "cifar-100-python/test"
    )


def test_truncated_pickle_in_folder(tmp_path, monkeypatch, cifar100_member_bytes):
    # The decoder's own check, behind the digest (taken here as matching): a
    # pickle cut short is refused in one line too.
    members = dict(cifar100_member_bytes)
    members["train"] = members["train"][: len(members["train"]) // 2]
    folder = write_folder(
        tmp_path / "d" / "cifar100" / "cifar-100-python", members, trust=monkeypatch
    )
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "d", download=False),
        folder / "train",
        "truncated or corrupt",
    )


def _damaged(arrays, what: str) -> dict[str, bytes]:
    train, train_labels, test, test_labels = arrays
    members = cifar100_members(train, train_labels, test, test_labels)
    batch = pickle.loads(members["train"], encoding="bytes")
    if what == "columns":
        batch[b"data"] = batch[b"data"][:, :3071]
    elif what == "dtype":
        batch[b"data"] = batch[b"data"].astype(np.int16)
    elif what == "count":
        batch[b"fine_labels"] = batch[b"fine_labels"][:-1]
    elif what == "range":
        batch[b"fine_labels"][3] = 100
    elif what == "negative":
        batch[b"fine_labels"][3] = -1
    elif what == "no_labels":
        del batch[b"fine_labels"]
    elif what == "not_dict":
        batch = [1, 2, 3]
    elif what == "names":
        meta = {b"fine_label_names": [s.encode() for s in FINE[::-1]]}
        members["meta"] = pickled(meta)
    elif what == "missing_meta":
        del members["meta"]
    members["train"] = pickled(batch)
    return members


@pytest.mark.parametrize(
    "what, needle",
    [
        ("columns", "3072"),
        ("dtype", "uint8"),
        ("count", "120 images but 119 labels"),
        ("range", "[0, 99]"),
        ("negative", "[0, 99]"),
        ("no_labels", "fine_labels"),
        ("not_dict", "expected a dict"),
        ("names", "label names"),
        ("missing_meta", "meta is missing"),
    ],
)
def test_folder_contents_are_validated(tmp_path, monkeypatch, cifar100_arrays, what, needle):
    write_folder(
        tmp_path / "d" / "cifar100" / "cifar-100-python",
        _damaged(cifar100_arrays, what),
        trust=monkeypatch,
    )
    one_line_error(lambda: load_dataset("cifar100", tmp_path / "d", download=False), needle)


# --------------------------------------------------------------------------
# The extracted folder is verified file by file.


def test_member_table_covers_every_file_the_loader_reads():
    for name, spec in data._CIFAR.items():
        files = {*spec.train_files, spec.test_file, spec.meta_file}
        assert set(data.MEMBER_CHECKSUMS[name]) == files
        for size, digest in data.MEMBER_CHECKSUMS[name].values():
            assert size > 0 and len(digest) == 32 and int(digest, 16) >= 0
    # Spot checks against torchvision's train_list / test_list / meta.
    assert data.MEMBER_CHECKSUMS["cifar100"]["train"][1] == "16019d7e3df5f24257cddd939b257f8d"
    assert data.MEMBER_CHECKSUMS["cifar10"]["test_batch"][1] == "40351d587109b95175f43aff81a1287e"
    # 50,000 images of 3,072 bytes and a little more for labels and file names.
    assert 153_600_000 < data.MEMBER_CHECKSUMS["cifar100"]["train"][0] < 156_000_000


def test_a_folder_that_is_not_the_official_one_is_refused(tmp_path, cifar100_member_bytes):
    # Issue 7: a folder of a few well-formed pickles used to pass as CIFAR-100.
    folder = write_folder(tmp_path / "d" / "cifar100" / "cifar-100-python", cifar100_member_bytes)
    msg = one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "d", download=False),
        "not the official CIFAR-100 file",
        "1,473",  # the official meta file's size
        "extract it again from the official cifar-100-python.tar.gz",
    )
    assert str(folder / "meta")[-60:] in msg


@pytest.mark.parametrize("member", ["train", "test", "meta"])
@pytest.mark.parametrize("damage", ["short", "same size", "longer"])
def test_a_wrong_member_file_is_named_with_what_to_do(
    tmp_path, monkeypatch, cifar100_member_bytes, member, damage
):
    folder = write_folder(
        tmp_path / "d" / "cifar100" / "cifar-100-python", cifar100_member_bytes, trust=monkeypatch
    )
    raw = cifar100_member_bytes[member]
    if damage == "short":
        changed, needle = raw[:-1], f"{len(raw) - 1:,} bytes, the official one has {len(raw):,}"
    elif damage == "longer":
        changed, needle = raw + b"\0", f"{len(raw) + 1:,} bytes"
    else:
        changed = raw[:-2] + bytes([raw[-2] ^ 1]) + raw[-1:]
        needle = f"md5 {hashlib.md5(changed).hexdigest()}, the official one has {md5_of(raw)}"
    (folder / member).write_bytes(changed)
    msg = one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "d", download=False),
        "not the official CIFAR-100 file",
        needle,
        "extract it again",
    )
    assert msg.split(":")[0].endswith(f"cifar-100-python/{member}"), msg
    # Refused, not changed: the user's file is as it was.
    assert (folder / member).read_bytes() == changed


def test_cifar10_folder_files_are_checked_too(tmp_path, monkeypatch, cifar10_arrays):
    members = cifar10_members(*cifar10_arrays)
    folder = write_folder(tmp_path / "d" / "cifar10" / "cifar-10-batches-py", members)
    trusted = dict(members)
    trusted["data_batch_3"] = b"something else"
    trust_members(monkeypatch, "cifar10", trusted)
    one_line_error(
        lambda: load_dataset("cifar10", tmp_path / "d", download=False),
        str(folder / "data_batch_3")[-40:],
        "not the official CIFAR-10 file",
        "cifar-10-python.tar.gz",
    )


def test_each_file_is_read_and_hashed_once(tmp_path, monkeypatch, cifar100_member_bytes):
    write_folder(
        tmp_path / "d" / "cifar100" / "cifar-100-python", cifar100_member_bytes, trust=monkeypatch
    )
    reads = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: reads.append(p.name) or original(p))
    load_dataset("cifar100", tmp_path / "d", download=False)
    assert sorted(reads) == ["meta", "test", "train"]


def test_unverified_data_is_accepted_with_a_warning_and_its_own_fingerprint(
    tmp_path, monkeypatch, capsys, cifar100_member_bytes
):
    folder = tmp_path / "d" / "cifar100" / "cifar-100-python"
    write_folder(folder, cifar100_member_bytes)
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    loose = load_dataset("cifar100", tmp_path / "d", download=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and data.UNVERIFIED_ENV in err
    assert "unverified" in err
    assert loose.fingerprint.startswith("cifar100:unverified:sha256=")
    # The same files taken as official: the same arrays, another fingerprint, so
    # no run on the one can ever be resumed as a run on the other.
    monkeypatch.setenv(data.UNVERIFIED_ENV, "0")
    trust_members(monkeypatch, "cifar100", cifar100_member_bytes)
    checked = load_dataset("cifar100", tmp_path / "d", download=False)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(loose.train_images, checked.train_images)
    assert checked.fingerprint.startswith("cifar100:sha256=")
    assert loose.fingerprint.split(":")[-1] == checked.fingerprint.split(":")[-1]
    assert loose.fingerprint != checked.fingerprint


def test_unverified_archive(tmp_path, monkeypatch, capsys, cifar100_member_bytes):
    cifar100_archive(tmp_path, cifar100_member_bytes, monkeypatch, match_md5=False)
    monkeypatch.setenv(data.UNVERIFIED_ENV, "yes")
    ds = load_dataset("cifar100", tmp_path / "d", download=False)
    assert ds.fingerprint.startswith("cifar100:unverified:")
    assert capsys.readouterr().err.count("\n") == 1


def test_official_format_copy_needs_the_escape_hatch(
    tmp_path, monkeypatch, capsys, cifar100_arrays
):
    # benchmarks/official_format_copy.py writes synthetic images in the official
    # format: refused as CIFAR-100, accepted (and marked) with the variable set.
    import runpy
    from types import SimpleNamespace

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "official_format_copy.py"
    assert data.UNVERIFIED_ENV in script.read_text()  # its usage says how to read it
    write_copy = runpy.run_path(str(script))["write_copy"]
    train, train_labels, test, test_labels = cifar100_arrays
    small = SimpleNamespace(
        train_images=train, train_labels=train_labels, test_images=test, test_labels=test_labels
    )
    write_copy(tmp_path / "fake" / "cifar100" / "cifar-100-python", small)
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "fake", download=False),
        "not the official CIFAR-100 file",
    )
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    ds = load_dataset("cifar100", tmp_path / "fake", download=False)
    assert capsys.readouterr().err.count("\n") == 1
    assert ds.fingerprint.startswith("cifar100:unverified:")
    np.testing.assert_array_equal(ds.train_images, train)
    np.testing.assert_array_equal(ds.test_labels, test_labels)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch, cifar100_member_bytes):
    members = dict(cifar100_member_bytes)
    members["train"] = pickled({b"data": _Boom()})
    write_folder(tmp_path / "d" / "cifar100" / "cifar-100-python", members, trust=monkeypatch)
    monkeypatch.chdir(tmp_path)
    one_line_error(lambda: load_dataset("cifar100", tmp_path / "d", download=False), "system")
    assert not (tmp_path / "pwned.txt").exists()


def test_bad_names_and_class_counts(tmp_path):
    def err(*args, **kwargs):
        return one_line_error(lambda: load_dataset(*args, **kwargs))

    assert "cifar100, cifar10, synthetic" in err("imagenet", tmp_path)
    assert "must be 100" in err("cifar100", tmp_path, num_classes=10)
    assert "must be 10" in err("cifar10", tmp_path, num_classes=100)
    assert "[2, 1000]" in err("synthetic", tmp_path, num_classes=1)
    assert "[2, 1000]" in err("synthetic", tmp_path, num_classes=1001)
    assert "integer" in err("synthetic", tmp_path, num_classes=True)
    assert "integer" in err("cifar100", tmp_path, num_classes=100.0)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------
# tensorflow-datasets as the source.


def test_data_sources_and_a_bad_one(tmp_path):
    assert data.DATA_SOURCES == ("auto", "archive", "tfds")
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path, source="kaggle"), "auto, archive, tfds"
    )
    msg = one_line_error(lambda: load_dataset("cifar100", tmp_path, source="x" * 10_000))
    assert len(msg) < 200


def prepared_marker(root: Path, name: str = "cifar100", version: str = "3.0.2") -> Path:
    """What tfds leaves last in a prepared copy: <root>/<name>/<version>/dataset_info.json."""
    folder = root / name / version
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    return root


class _ExampleSource:
    """A tfds data source over given examples (what tfds.data_source returns)."""

    def __init__(self, info, examples):
        self.dataset_info, self._examples = info, examples

    def __len__(self):
        return len(self._examples)

    def __getitem__(self, i):
        return self._examples[i]


def tfds_examples(arrays, seed=0):
    """{split: examples} of the given arrays as a prepared tfds copy holds them:
    shuffled, each with its official index in the "id" feature."""
    train, train_labels, test, test_labels = arrays
    rng = np.random.default_rng(seed)
    out = {}
    for split, images, labels in (("train", train, train_labels), ("test", test, test_labels)):
        order = rng.permutation(len(images))
        # Ids as text for one split and as bytes for the other: tfds gives either.
        ident = (lambda i: f"train_{i:05d}") if split == "train" else (lambda i: b"test_%05d" % i)
        out[split] = [
            {
                "id": ident(i),
                "image": images[i],
                "label": np.int64(labels[i]),
                "coarse_label": np.int64(labels[i] // 5),
            }
            for i in order
        ]
    return out


def mock_tfds(monkeypatch, name, arrays, seed=0):
    tfds = pytest.importorskip("tensorflow_datasets")
    examples = tfds_examples(arrays, seed)
    n_train, n_test = len(arrays[0]), len(arrays[2])
    monkeypatch.setitem(data.OFFICIAL_COUNTS, name, (n_train, n_test))

    def as_data_source(self, split=None, **kwargs):
        return _ExampleSource(self.info, examples[split])

    return tfds.testing.mock_data(as_data_source_fn=as_data_source)


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_tfds_gives_the_archive_s_arrays_and_fingerprint(
    tmp_path, monkeypatch, name, cifar100_arrays, cifar10_arrays
):
    arrays = cifar100_arrays if name == "cifar100" else cifar10_arrays
    members = (cifar100_members if name == "cifar100" else cifar10_members)(*arrays)
    folder = data._CIFAR[name].folder
    write_folder(tmp_path / "a" / name / folder, members, trust=monkeypatch)
    from_archive = load_dataset(name, tmp_path / "a", download=False, source="archive")
    prepared_marker(tmp_path / "t", name)
    with mock_tfds(monkeypatch, name, arrays):
        from_tfds = load_dataset(name, tmp_path / "t", download=False, source="tfds")
    for field in ("train_images", "train_labels", "test_images", "test_labels", "mean", "std"):
        a, b = getattr(from_archive, field), getattr(from_tfds, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b)
    assert from_tfds.class_names == from_archive.class_names
    assert from_tfds.fingerprint == from_archive.fingerprint
    assert from_tfds.fingerprint.startswith(f"{name}:sha256=")
    if name == "cifar100":
        assert from_tfds.train_labels[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]


def write_array_record_copy(root: Path, arrays, label_names=FINE, seed=1) -> Path:
    """A prepared tfds cifar100 copy as ``tfds build --file_format=array_record``
    leaves it, written without TensorFlow: shuffled PNG examples in ArrayRecord
    files, and the metadata tfds reads (dataset_info.json, features.json, labels)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    array_record = pytest.importorskip("array_record.python.array_record_module")
    from PIL import Image
    from tensorflow_datasets.proto import tf_example_pb2

    folder = root / "cifar100" / "3.0.2"
    folder.mkdir(parents=True)
    train, train_labels, test, test_labels = arrays
    rng = np.random.default_rng(seed)
    splits = []
    for split, images, labels in (("train", train, train_labels), ("test", test, test_labels)):
        template = tfds.core.ShardedFileTemplate(
            data_dir=folder, dataset_name="cifar100", split=split, filetype_suffix="array_record"
        )
        path = folder / f"cifar100-{split}.array_record-00000-of-00001"
        writer = array_record.ArrayRecordWriter(str(path), "group_size:1")
        for i in rng.permutation(len(images)):
            png = io.BytesIO()
            Image.fromarray(images[i]).save(png, format="PNG")
            example = tf_example_pb2.Example()
            feature = example.features.feature
            feature["id"].bytes_list.value.append(f"{split}_{i:05d}".encode())
            feature["image"].bytes_list.value.append(png.getvalue())
            feature["label"].int64_list.value.append(int(labels[i]))
            feature["coarse_label"].int64_list.value.append(int(labels[i]) // 5)
            writer.write(example.SerializeToString())
        writer.close()
        splits.append(
            tfds.core.SplitInfo(
                name=split, shard_lengths=[len(images)], num_bytes=0, filename_template=template
            )
        )
    info = tfds.builder("cifar100", data_dir=str(root)).info
    info.features["label"].names = list(label_names)
    info.set_file_format("array_record", override=True)
    info.set_splits(tfds.core.SplitDict(splits))
    info.write_to_directory(folder)
    return root


def test_tfds_reads_a_real_array_record_copy(tmp_path, monkeypatch, cifar100_arrays):
    # No mock: tfds.data_source reads the files, parses the examples and decodes
    # the PNGs as it does for a copy prepared by tfds.
    root = write_array_record_copy(tmp_path / "t", cifar100_arrays)
    monkeypatch.setitem(data.OFFICIAL_COUNTS, "cifar100", (120, 20))
    before = sorted(p.name for p in (root / "cifar100" / "3.0.2").iterdir())
    from_tfds = load_dataset("cifar100", root, source="tfds")
    write_folder(
        tmp_path / "a" / "cifar100" / "cifar-100-python",
        cifar100_members(*cifar100_arrays),
        trust=monkeypatch,
    )
    from_archive = load_dataset("cifar100", tmp_path / "a", download=False)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(from_tfds, field), getattr(from_archive, field))
    assert from_tfds.fingerprint == from_archive.fingerprint
    # auto finds it too, with nothing in data_dir but the tfds copy.
    assert load_dataset("cifar100", root, download=False).fingerprint == from_archive.fingerprint
    assert sorted(p.name for p in (root / "cifar100" / "3.0.2").iterdir()) == before


def test_tfds_copy_with_other_label_names_is_refused(tmp_path, monkeypatch, cifar100_arrays):
    names = [f"thing_{i}" for i in range(100)]
    root = write_array_record_copy(tmp_path, cifar100_arrays, label_names=names)
    monkeypatch.setitem(data.OFFICIAL_COUNTS, "cifar100", (120, 20))
    one_line_error(
        lambda: load_dataset("cifar100", root, source="tfds"),
        "label names are not the official CIFAR-100 ones",
        "thing_0",
    )


def test_auto_prefers_the_archive_then_tfds_then_the_download(
    tmp_path, monkeypatch, cifar100_arrays
):
    train, train_labels, test, test_labels = cifar100_arrays
    other = train.copy()
    other[0, 0, 0, 0] ^= 255  # the tfds copy differs, to tell the two apart
    members = cifar100_members(*cifar100_arrays)
    # The prepared copy sits in tfds's own folder (TFDS_DATA_DIR), not in data_dir.
    prepared_marker(Path(os.environ["TFDS_DATA_DIR"]))
    with mock_tfds(monkeypatch, "cifar100", (other, train_labels, test, test_labels)):
        from_tfds = load_dataset("cifar100", tmp_path / "d", download=False)
        np.testing.assert_array_equal(from_tfds.train_images, other)
        write_folder(tmp_path / "d" / "cifar100" / "cifar-100-python", members, trust=monkeypatch)
        from_archive = load_dataset("cifar100", tmp_path / "d", download=False)
        np.testing.assert_array_equal(from_archive.train_images, train)
        assert from_archive.fingerprint != from_tfds.fingerprint
    # Neither: the archive's "not found" line, as before tfds.
    (Path(os.environ["TFDS_DATA_DIR"]) / "cifar100" / "3.0.2" / "dataset_info.json").unlink()
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "none", download=False),
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    )


def test_tfds_without_tensorflow_datasets_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path, source="tfds"),
        "tensorflow-datasets",
        'pip install -e ".[tfds]"',
    )
    # auto passes a prepared copy it cannot read and goes on to the archive.
    prepared_marker(tmp_path)
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path, download=False), "cifar-100-python.tar.gz"
    )


def test_tfds_unprepared_says_how_to_prepare(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    (tmp_path / "cifar100" / "3.0.2").mkdir(parents=True)  # begun, never finished
    msg = one_line_error(
        lambda: load_dataset("cifar100", tmp_path, source="tfds"),
        "tfds build cifar100 --file_format=array_record",
        "archive",
    )
    assert str(tmp_path)[-40:] in msg and "tfds-default" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar100"]  # nothing written


def test_tfds_copy_that_is_not_official_is_refused(tmp_path, monkeypatch, cifar100_arrays):
    tfds = pytest.importorskip("tensorflow_datasets")
    prepared_marker(tmp_path)
    # tfds's own random examples: not as many as CIFAR-100 has, refused unread.
    with tfds.testing.mock_data(num_examples=7):
        one_line_error(
            lambda: load_dataset("cifar100", tmp_path, source="tfds"),
            "the train split has 7 examples, the official CIFAR-100 50,000",
            "prepare it again",
        )
    # An id of another kind, a repeated id, and one past the end.
    monkeypatch.setitem(data.OFFICIAL_COUNTS, "cifar100", (120, 20))
    for bad in ("ebc  ahgjefjhfe", "train_00003", "train_00120"):
        examples = tfds_examples(cifar100_arrays)
        examples["train"][5] = {**examples["train"][5], "id": bad}

        def as_data_source(self, split=None, examples=examples, **kwargs):
            return _ExampleSource(self.info, examples[split])

        with tfds.testing.mock_data(as_data_source_fn=as_data_source):
            one_line_error(
                lambda: load_dataset("cifar100", tmp_path, source="tfds"),
                {"train_00003": "repeats example ids", "train_00120": "below 120"}.get(
                    bad, "is not train_NNNNN"
                ),
            )


def test_tfds_unverified_copy_is_marked(tmp_path, monkeypatch, capsys, cifar100_arrays):
    train, train_labels, test, test_labels = cifar100_arrays
    prepared_marker(tmp_path)
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")
    with mock_tfds(monkeypatch, "cifar100", cifar100_arrays):
        monkeypatch.setitem(data.OFFICIAL_COUNTS, "cifar100", (50_000, 10_000))
        ds = load_dataset("cifar100", tmp_path, source="tfds")
    assert ds.fingerprint.startswith("cifar100:unverified:")
    np.testing.assert_array_equal(ds.train_images, train)
    assert capsys.readouterr().err.count("\n") == 1


def test_tfrecord_copy_without_tensorflow(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    prepared_marker(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorflow", None)

    def tfrecord_only(self, split=None, **kwargs):
        raise NotImplementedError("Random access data source for file format tfrecord")

    with tfds.testing.mock_data(as_data_source_fn=tfrecord_only):
        one_line_error(
            lambda: load_dataset("cifar100", tmp_path, source="tfds"),
            "TFRecord",
            "pip install tensorflow",
            "--file_format=array_record",
        )


# --------------------------------------------------------------------------
# Downloading, with the network replaced.


class _FakeResponse(io.BytesIO):
    pass


def _fake_urlopen(payload: bytes | Exception, calls: list):
    def urlopen(url, timeout=None):
        calls.append((url, timeout))
        if isinstance(payload, Exception):
            raise payload
        return _FakeResponse(payload)

    return urlopen


def test_download_verifies_then_renames(tmp_path, monkeypatch, cifar100_member_bytes):
    source = write_targz(tmp_path / "src" / "a.tar.gz", "cifar-100-python", cifar100_member_bytes)
    monkeypatch.setitem(data.EXPECTED_MD5, "cifar100", md5(source))
    monkeypatch.setenv("JAXMIA_NO_DOWNLOAD", "0")
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(source.read_bytes(), calls))
    ds = load_dataset("cifar100", tmp_path / "data")
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", 20.0)]
    home = tmp_path / "data" / "cifar100"
    assert [p.name for p in home.iterdir()] == ["cifar-100-python.tar.gz"]
    assert md5(home / "cifar-100-python.tar.gz") == md5(source)
    assert ds.train_labels[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]
    # A second load reads the archive and does not download again.
    load_dataset("cifar100", tmp_path / "data")
    assert len(calls) == 1


def test_failed_downloads_leave_nothing_behind(tmp_path, monkeypatch, cifar100_member_bytes):
    monkeypatch.delenv("JAXMIA_NO_DOWNLOAD", raising=False)
    calls = []
    offline = urllib.error.URLError(OSError("Name or service not known"))
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(offline, calls))
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "data"),
        "could not be downloaded",
        "Name or service not known",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    )
    assert not (tmp_path / "data").exists()
    # Bytes that are not the official archive: refused, and no partial file kept.
    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(b"<html>not it</html>", calls))
    one_line_error(
        lambda: load_dataset("cifar100", tmp_path / "data"),
        "could not be downloaded",
        f"md5 {hashlib.md5(b'<html>not it</html>').hexdigest()}",
    )
    assert not (tmp_path / "data").exists()
    # An existing data folder is kept, and stays empty.
    (tmp_path / "data").mkdir()
    one_line_error(lambda: load_dataset("cifar100", tmp_path / "data"), "could not be downloaded")
    assert list((tmp_path / "data").iterdir()) == []
    assert len(calls) == 3


# --------------------------------------------------------------------------
# Synthetic data.


def test_synthetic_is_deterministic_balanced_and_cifar_shaped():
    data._synthetic.cache_clear()
    start = time.perf_counter()
    a = load_dataset("synthetic", "unused", num_classes=10)
    took = time.perf_counter() - start
    data._synthetic.cache_clear()
    b = load_dataset("synthetic", "unused")  # 10 classes by default
    assert a is not b
    for field in ("train_images", "train_labels", "test_images", "test_labels", "mean", "std"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint == "synthetic:v1:classes=10:seed=20251128:n=50000/10000"
    assert load_dataset("synthetic", "unused") is b  # cached
    assert took < 5.0, took  # ~0.5 s on a 2-core CPU

    assert (a.name, a.synthetic, a.num_classes) == ("synthetic", True, 10)
    assert a.class_names[:2] == ("class_000", "class_001") and len(a.class_names) == 10
    assert a.train_images.shape == (50_000, 32, 32, 3) and a.train_images.dtype == np.uint8
    assert a.test_images.shape == (10_000, 32, 32, 3) and a.test_images.dtype == np.uint8
    assert a.train_labels.dtype == np.int32 and a.test_labels.dtype == np.int32
    assert np.bincount(a.train_labels).tolist() == [5000] * 10
    assert np.bincount(a.test_labels).tolist() == [1000] * 10
    # Shuffled, not in blocks of a class.
    assert np.mean(a.train_labels[1:] == a.train_labels[:-1]) < 0.15
    # Uses the whole grey range without saturating much.
    assert 0.35 < a.train_images.mean() / 255 < 0.65
    assert np.mean((a.train_images == 0) | (a.train_images == 255)) < 0.03

    # Pinned content: a change to the generator must come with a new version tag.
    digest = hashlib.sha256(
        a.train_images[:64].tobytes() + a.train_labels[:64].astype("<i4").tobytes()
    )
    assert digest.hexdigest()[:16] == "a703fd65be986467"


def test_synthetic_mean_and_std_match_numpy():
    ds = load_dataset("synthetic", "unused")
    channels = np.ascontiguousarray(ds.train_images.reshape(-1, 3).T)
    mean = channels.mean(axis=1, dtype=np.float64) / 255
    std = channels.std(axis=1, dtype=np.float64) / 255
    assert ds.mean.dtype == np.float32 and ds.mean.shape == (3,)
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ds.std, std, rtol=1e-6)


def test_synthetic_classes_are_separable_but_images_are_all_different():
    ds = load_dataset("synthetic", "unused")

    def features(images):
        # 8x8 average-pooled, each image's own mean removed (brightness varies per image).
        x = images.astype(np.float32).reshape(len(images), 8, 4, 8, 4, 3).mean(axis=(2, 4))
        x = x.reshape(len(images), -1)
        return x - x.mean(axis=1, keepdims=True)

    train, labels = features(ds.train_images[:5000]), ds.train_labels[:5000]
    test = features(ds.test_images[:2000])
    centres = np.stack([train[labels == c].mean(axis=0) for c in range(10)])
    dist = (test**2).sum(1)[:, None] - 2 * test @ centres.T + (centres**2).sum(1)[None]
    accuracy = np.mean(dist.argmin(axis=1) == ds.test_labels[:2000])
    # Chance is 0.1; measured 0.77.  Not near 1: the class signal is meant to be
    # weak next to each image's own content, so that unseen images stay uncertain.
    assert 0.6 < accuracy < 0.95, accuracy
    # Every image is its own: nothing for a model to learn about x from a copy of x.
    rows = ds.train_images.reshape(len(ds.train_images), -1)
    assert len({hashlib.blake2b(r.tobytes(), digest_size=8).digest() for r in rows}) == 50_000


def test_synthetic_class_counts():
    ds = load_dataset("synthetic", "unused", num_classes=3)
    assert ds.num_classes == 3 and ds.class_names == ("class_000", "class_001", "class_002")
    assert np.bincount(ds.train_labels).tolist() == [16667, 16667, 16666]
    assert np.bincount(ds.test_labels).tolist() == [3334, 3333, 3333]
    assert ds.fingerprint == "synthetic:v1:classes=3:seed=20251128:n=50000/10000"
    other = load_dataset("synthetic", "unused", num_classes=2)
    assert other.fingerprint != ds.fingerprint
