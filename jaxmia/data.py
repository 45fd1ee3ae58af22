"""Data sets as host numpy arrays: CIFAR-100, CIFAR-10 and a synthetic stand-in.

CIFAR comes from one of two sources (``load_dataset(..., source=)``):

* ``archive``: the official python archives (``cifar-100-python.tar.gz``,
  ``cifar-10-python.tar.gz``), read straight from the ``.tar.gz`` (its md5 is
  checked first) or from the folder the archive extracts to (every member file
  is checked against its official size and md5).  When neither is there, the
  archive is downloaded once (verified, then renamed into place).
* ``tfds``: a copy prepared by tensorflow-datasets (``tfds build cifar100``),
  read through ``tfds.data_source`` (ArrayRecord) or ``tfds.load`` (TFRecord,
  needs TensorFlow) and put back into the official order by its ``id``
  feature, so that both sources give identical arrays and fingerprints.

``auto`` takes the archive or folder when one is there, else a prepared tfds
copy, else downloads the archive.  The environment variable
JAXMIA_UNVERIFIED_DATA=1 accepts files that are not the official ones (for
copies made for timing); such data gets a fingerprint of its own.

Every problem a user can cause (missing, truncated or foreign files) raises
``UserError`` with a one-line message; this module never writes anything into
the data folder except a successfully downloaded, verified archive.

The synthetic data set needs no files: weak smooth class prototypes under
class-free scenes, noise, shift and brightness, so that a small CNN can both
learn the classes and memorise single images.  It is bit-for-bit the same on
every machine and numpy version: it is built from the raw PCG64 stream with
integer arithmetic only.

No JAX here: the device side starts in ``jaxmia.training``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import pickle
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxmia.errors import UserError

DATASET_NAMES = ("cifar100", "cifar10", "synthetic")

# The official archives' checksums, by data set name.  A dict so that tests can
# put in the md5 of the small archives they write.
EXPECTED_MD5 = {
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar10": "c58f30108f718f92721af3b95e74349a",
}

# Size in bytes and md5 of every file the official archives extract to: the
# digests are the ones torchvision lists (train_list, test_list, meta), the
# sizes those of the extracted files.  A folder is accepted only if each file it
# is read from matches, as the archive is accepted only if its md5 does.  Tests
# put in the sizes and digests of the small files they write.
MEMBER_CHECKSUMS: dict[str, dict[str, tuple[int, str]]] = {
    "cifar100": {
        "train": (155_249_918, "16019d7e3df5f24257cddd939b257f8d"),
        "test": (31_049_707, "f0ef6b0ae62326f3e7ffdfab6717acfc"),
        "meta": (1_473, "7973b15100ade9c7d40fb424638fde48"),
    },
    "cifar10": {
        "data_batch_1": (31_035_704, "c99cafc152244af753f735de768cd75f"),
        "data_batch_2": (31_035_320, "d4bba439e000b95fd0a9bffe97cbabec"),
        "data_batch_3": (31_035_999, "54ebc095f3ab1f0389bbae665268c751"),
        "data_batch_4": (31_035_696, "634d18415352ddfa80567beed471001a"),
        "data_batch_5": (31_035_623, "482c414d41f54cd18b22e5b47cb7c3cb"),
        "test_batch": (31_035_526, "40351d587109b95175f43aff81a1287e"),
        "batches.meta": (158, "5ff9c542aee3614f3951f8cda6e48888"),
    },
}

# Images per split (train, test) of the official data sets.  A tfds copy has no
# file digests to compare, so its counts and ids are what is checked.
OFFICIAL_COUNTS = {"cifar100": (50_000, 10_000), "cifar10": (50_000, 10_000)}

# Where CIFAR may come from: see load_dataset.
DATA_SOURCES = ("auto", "archive", "tfds")

# Set to 1 to accept CIFAR files that are not the official ones (see the module
# docstring).  The run's data fingerprint then says "unverified".
UNVERIFIED_ENV = "JAXMIA_UNVERIFIED_DATA"
UNVERIFIED_TAG = "unverified"  # the fingerprint's second field for such data


def fingerprint_unverified(fingerprint) -> bool:
    """Whether a data fingerprint (``Dataset.fingerprint``, run.json's ``data_fingerprint``)
    is of data taken on the user's word (JAXMIA_UNVERIFIED_DATA=1): ``<name>:unverified:...``."""
    return isinstance(fingerprint, str) and fingerprint.split(":")[1:2] == [UNVERIFIED_TAG]


DOWNLOAD_TIMEOUT_S = 20.0

CIFAR100_FINE_LABELS = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    """One data set, fully in host memory.  The arrays are read-only."""

    name: str  # one of DATASET_NAMES
    train_images: np.ndarray  # uint8[N, 32, 32, 3], HWC RGB, official order
    train_labels: np.ndarray  # int32[N]
    test_images: np.ndarray  # uint8[M, 32, 32, 3]
    test_labels: np.ndarray  # int32[M]
    class_names: tuple[str, ...]  # class index -> name
    synthetic: bool
    fingerprint: str  # identifies the exact arrays; part of every run hash
    mean: np.ndarray  # float32[3], per-channel mean of train_images / 255
    std: np.ndarray  # float32[3], per-channel std of train_images / 255

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of every image: train_images.shape[1:]."""
        return tuple(self.train_images.shape[1:])


def load_dataset(
    name: str,
    data_dir: str | os.PathLike,
    *,
    num_classes: int | None = None,
    download: bool = True,
    source: str = "auto",
) -> Dataset:
    """Loads ``name`` (one of DATASET_NAMES) as uint8[n, 32, 32, 3] images in official order.

    ``num_classes`` must be None or the data set's own class count for CIFAR;
    for "synthetic" it chooses the number of classes (2..1000, default 10).

    ``source`` (one of DATA_SOURCES) says where CIFAR comes from; synthetic data
    ignores it.  "archive": ``data_dir/<name>/`` holding the official archive or
    its extracted folder, downloaded there when neither is present.  "tfds": a
    copy prepared by tensorflow-datasets, looked for first in ``data_dir`` (its
    layout ``<name>/<version>/`` fits beside the archive's) and then in tfds's
    own data folder (TFDS_DATA_DIR, default ~/tensorflow_datasets); never
    downloaded.  "auto": the archive or folder if present, else a prepared tfds
    copy (when tensorflow-datasets is installed), else the download.

    ``download=False``, or the environment variable JAXMIA_NO_DOWNLOAD=1, turns
    a missing CIFAR archive into an error at once instead of a download attempt.
    JAXMIA_UNVERIFIED_DATA=1 accepts unofficial CIFAR files, with a warning on
    stderr and a fingerprint that says so.  Raises UserError for anything the
    user can fix.
    """
    if name not in DATASET_NAMES:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    if not isinstance(source, str) or source not in DATA_SOURCES:
        raise UserError(
            f"unknown data source {_short(repr(source))}: choose one of {', '.join(DATA_SOURCES)}"
        )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
    ):
        raise UserError(f"num_classes must be an integer, got {num_classes!r}")
    if name == "synthetic":
        n = 10 if num_classes is None else int(num_classes)
        if not 2 <= n <= SYNTHETIC_MAX_CLASSES:
            raise UserError(
                f"num_classes must be in [2, {SYNTHETIC_MAX_CLASSES}] for the synthetic "
                f"dataset, got {n}"
            )
        return _synthetic(n)
    spec = _CIFAR[name]
    if num_classes is not None and int(num_classes) != len(spec.label_names):
        raise UserError(
            f"num_classes must be {len(spec.label_names)} for dataset {name}, got {num_classes}"
        )
    if _env_flag("JAXMIA_NO_DOWNLOAD"):
        download = False
    verify = not _env_flag(UNVERIFIED_ENV)
    data_dir = Path(data_dir)
    if source == "archive" or (source == "auto" and _archive_present(spec, data_dir)):
        return _load_cifar(spec, data_dir, download, verify)
    if source == "tfds":
        return _load_tfds(spec, data_dir, verify)
    found = _find_tfds(spec, data_dir)
    if found is not None and _tfds_importable():
        return _load_tfds(spec, data_dir, verify, found)
    return _load_cifar(spec, data_dir, download, verify)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _short(text, limit: int = 80) -> str:
    """A user's value (mostly a path) cut to its last ``limit`` characters for a message."""
    text = str(text)
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _warn_unverified(what: str) -> None:
    # One line, once per load: the run goes on, but nobody may mistake it for
    # a run on the official data (its fingerprint says "unverified" too).
    print(
        f"jaxmia: warning: {UNVERIFIED_ENV} is set: {what} is used without checking that it "
        "is the official data; this run's data fingerprint is marked unverified",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------
# CIFAR: where the files are and what is in them.


@dataclass(frozen=True)
class _CifarSpec:
    name: str  # "cifar100" | "cifar10"
    title: str  # for messages
    archive: str  # file name of the official archive
    folder: str  # the folder the archive extracts to
    url: str
    train_files: tuple[str, ...]  # pickles whose rows, concatenated, form the train split
    test_file: str
    meta_file: str
    meta_key: bytes  # label names inside the meta pickle
    label_key: bytes  # labels inside each data pickle
    label_names: tuple[str, ...]


_CIFAR = {
    "cifar100": _CifarSpec(
        name="cifar100",
        title="CIFAR-100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        meta_key=b"fine_label_names",
        label_key=b"fine_labels",
        label_names=CIFAR100_FINE_LABELS,
    ),
    "cifar10": _CifarSpec(
        name="cifar10",
        title="CIFAR-10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        meta_key=b"label_names",
        label_key=b"labels",
        label_names=CIFAR10_LABELS,
    ),
}


def _archive_present(spec: _CifarSpec, data_dir: Path) -> bool:
    home = data_dir / spec.name
    return (home / spec.folder).is_dir() or (home / spec.archive).is_file()


def _load_cifar(spec: _CifarSpec, data_dir: Path, download: bool, verify: bool = True) -> Dataset:
    home = data_dir / spec.name
    archive, folder = home / spec.archive, home / spec.folder
    # The folder first: no gzip to inflate, and its files are checked one by one
    # as they are read.  The archive is the fallback, and what a download produces.
    if folder.is_dir():
        read = _folder_reader(spec, folder, verify)
        where = f"the {spec.folder}/ folder in {_short(home)}"
    elif archive.is_file():
        read = _archive_reader(spec, archive, verify)
        where = _short(archive)
    else:
        how = f"put {spec.archive} (md5 {EXPECTED_MD5[spec.name]}) or its extracted "
        how += f"{spec.folder}/ folder in {home}/ (from {spec.url})"
        if not download:
            raise UserError(f"{spec.title} not found and downloads are disabled: {how}")
        reason = _download(spec, archive)
        if reason is not None:
            raise UserError(f"{spec.title} not found and could not be downloaded ({reason}): {how}")
        # A download is always verified, whatever JAXMIA_UNVERIFIED_DATA says.
        read, where, verify = _archive_reader(spec, archive), _short(archive), True
    if not verify:
        _warn_unverified(where)
    return _decode(spec, read, verify)


def _folder_reader(spec: _CifarSpec, folder: Path, verify: bool = True):
    """Reads member files of an extracted archive, each checked against MEMBER_CHECKSUMS.

    The size is compared first (a cut-short copy is refused without reading it);
    the md5 is taken of the very bytes that are then decoded, so each file is
    read and hashed once, and what was checked is what is used.
    """
    official = MEMBER_CHECKSUMS[spec.name]
    fix = (
        f"extract it again from the official {spec.archive} (or set {UNVERIFIED_ENV}=1 to "
        "run on a copy of your own, marked unverified)"
    )

    def read(member: str) -> tuple[bytes, str]:
        path = folder / member
        try:
            size = path.stat().st_size
            if verify and size != official[member][0]:
                raise UserError(
                    f"{_short(path)}: not the official {spec.title} file ({size:,} bytes, the "
                    f"official one has {official[member][0]:,}): {fix}"
                )
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"{_short(path)} is missing: the folder must hold every file of the official "
                f"archive; {fix}"
            ) from None
        except IsADirectoryError:
            raise UserError(f"{_short(path)} is a folder, not a file: {fix}") from None
        except OSError as e:
            raise UserError(f"cannot read {_short(path)}: {e.strerror or e}") from None
        if verify:
            got, want = hashlib.md5(raw).hexdigest(), official[member][1]
            if got != want:
                raise UserError(
                    f"{_short(path)}: not the official {spec.title} file (md5 {got}, the "
                    f"official one has {want}): {fix}"
                )
        return raw, str(path)

    return read


def _archive_reader(spec: _CifarSpec, archive: Path, verify: bool = True):
    """Checks the archive's md5 (unless ``verify`` is off), then reads the needed members."""
    want = EXPECTED_MD5[spec.name]
    got = _file_md5(archive) if verify else want
    if got != want:
        raise UserError(
            f"{archive}: checksum mismatch (md5 expected {want}, got {got}): the file is "
            f"truncated or not the official archive; delete it and download it again"
        )
    # Members are read in archive order: jumping back and forth inside a gzip
    # stream would inflate it again from the start each time.
    wanted = {f"{spec.folder}/{m}" for m in (*spec.train_files, spec.test_file, spec.meta_file)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    found[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise UserError(f"{archive}: truncated or corrupt .tar.gz ({_why(e)})") from None

    def read(member: str) -> tuple[bytes, str]:
        name = f"{spec.folder}/{member}"
        if name not in found:
            raise UserError(f"{archive} has no member {name}: not the official archive")
        return found[name], f"{archive}:{name}"

    return read


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    return digest.hexdigest()


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _decode(spec: _CifarSpec, read, verify: bool = True) -> Dataset:
    names = _read_label_names(spec, read)
    parts = [_read_batch(spec, read, f, len(names)) for f in spec.train_files]
    train_images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    train_labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    test_images, test_labels = _read_batch(spec, read, spec.test_file, len(names))
    return _cifar_dataset(spec, train_images, train_labels, test_images, test_labels, verify)


def _cifar_dataset(
    spec: _CifarSpec,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    verify: bool,
) -> Dataset:
    """The Dataset of official-order arrays, whichever source they came from.

    uint8[n, 32, 32, 3] images and int32[n] labels in, so that the same images
    give the same fingerprint from the archive, its folder and tfds.
    """
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise UserError(f"{spec.title}: the train or test split is empty")
    arrays = (train_images, train_labels, test_images, test_labels)
    mean, std = _channel_stats(train_images)
    # Data taken on the user's word is kept apart from the official data:
    # another fingerprint, so no run or chunk of the one is reused for the other.
    tag = spec.name if verify else f"{spec.name}:{UNVERIFIED_TAG}"
    return Dataset(
        name=spec.name,
        train_images=_frozen(train_images),
        train_labels=_frozen(train_labels),
        test_images=_frozen(test_images),
        test_labels=_frozen(test_labels),
        class_names=spec.label_names,
        synthetic=False,
        fingerprint=f"{tag}:sha256={_content_hash(arrays)}",
        mean=_frozen(mean),
        std=_frozen(std),
    )


def _read_label_names(spec: _CifarSpec, read) -> tuple[str, ...]:
    raw, where = read(spec.meta_file)
    meta = _unpickle(raw, where)
    names = meta.get(spec.meta_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(s, (bytes, str)) for s in names):
        raise UserError(f"{where}: no list of label names under {spec.meta_key!r}")
    names = tuple(s.decode("ascii", "replace") if isinstance(s, bytes) else s for s in names)
    if names != spec.label_names:
        raise UserError(
            f"{where}: label names are not the official {spec.title} ones "
            f"({len(names)} names, first {', '.join(names[:3]) or 'none'})"
        )
    return names


def _read_batch(spec: _CifarSpec, read, member: str, n_classes: int):
    """(uint8[n, 32, 32, 3], int32[n]) from one official data pickle."""
    raw, where = read(member)
    batch = _unpickle(raw, where)
    if not isinstance(batch, dict):
        raise UserError(f"{where}: expected a dict, found {type(batch).__name__}")
    data, labels = batch.get(b"data"), batch.get(spec.label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise UserError(f"{where}: b'data' must be a uint8[n, 3072] array, found shape {shape}")
    if data.dtype != np.uint8:
        raise UserError(f"{where}: b'data' must be uint8, found {data.dtype}")
    try:
        labels = np.asarray(labels if isinstance(labels, (list, np.ndarray)) else None)
    except (TypeError, ValueError):
        labels = np.asarray(None)
    if len(data) == 0 and labels.shape == (0,):
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{where}: {spec.label_key!r} must be a list of integers")
    if len(labels) != len(data):
        raise UserError(f"{where}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise UserError(
            f"{where}: labels must be in [0, {n_classes - 1}], found {labels.min()}..{labels.max()}"
        )
    # The official rows are three 32x32 planes (R, G, B), each row-major.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int32)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected text encoding {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and nothing else.

    The official files are Python 2 pickles of dicts, lists, byte strings and
    one numpy array; refusing every other global keeps a foreign file from
    running code while it is read.  Copies re-saved by Python 3 are accepted too.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module, name):
        found = self._ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refers to {module}.{name}, which a CIFAR file never does"
            )
        return found


def _unpickle(raw: bytes, where: str):
    try:
        return _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a damaged pickle can fail in many ways; all mean the same
        raise UserError(
            f"{where}: not a readable CIFAR pickle, truncated or corrupt ({_why(e)})"
        ) from None


def _download(spec: _CifarSpec, target: Path) -> str | None:
    """Fetches the archive to ``target``; returns None, or why it failed.

    The bytes go to a hidden temporary file next to ``target`` and are renamed
    only once their md5 is right, so a partial download never sits under the
    final name.  Folders made for it are removed again when it fails.
    """
    try:
        response = urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.URLError as e:
        return _why(e.reason) if isinstance(e.reason, BaseException) else _why(e)
    except (OSError, ValueError) as e:
        return _why(e)
    made = []  # folders this download creates, deepest first
    up = target.parent
    while not up.exists() and up != up.parent:
        made.append(up)
        up = up.parent
    tmp = None
    try:
        with response:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        want = EXPECTED_MD5[spec.name]
        if digest.hexdigest() != want:
            return f"downloaded file has md5 {digest.hexdigest()}, expected {want}"
        os.replace(tmp, target)
        tmp = None
        return None
    except (OSError, ValueError) as e:
        return _why(e)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if not target.exists():
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break


# --------------------------------------------------------------------------
# CIFAR from tensorflow-datasets.
#
# tfds keeps a prepared data set in <data dir>/<name>/<version>/ (cifar100/3.0.2/),
# its examples shuffled on disk.  Each example's "id" feature, train_NNNNN or
# test_NNNNN, is its index in the official archive (tfds's cifar builder numbers
# the records of the official binary files in order), which puts every image
# back where the archive has it.  No digests exist for tfds's own files, so what
# is checked is what the ids and the counts can tell: every official index once.

_TFDS_INSTALL = 'pip install -e ".[tfds]"'
_VERSION_DIR = re.compile(r"\d+\.\d+\.\d+")


def _tfds_default_dir() -> Path:
    # tfds's own rule, read here so that looking costs no import.
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def _tfds_roots(data_dir: Path) -> list[Path]:
    roots = [data_dir, _tfds_default_dir()]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


def _find_tfds(spec: _CifarSpec, data_dir: Path) -> tuple[Path, str] | None:
    """(data dir, version) of the newest prepared copy, looking only at the disk.

    A version folder counts as prepared once tfds has written its
    dataset_info.json, which tfds does last.
    """
    for root in _tfds_roots(data_dir):
        try:
            versions = [
                v.name
                for v in (root / spec.name).iterdir()
                if _VERSION_DIR.fullmatch(v.name) and (v / "dataset_info.json").is_file()
            ]
        except OSError:  # no such folder, or not readable: nothing prepared there
            continue
        if versions:
            return root, max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    return None


def _tfds_importable() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401
    except Exception:  # missing, or broken by its dependencies: auto goes on without it
        return False
    return True


def _load_tfds(
    spec: _CifarSpec, data_dir: Path, verify: bool, found: tuple[Path, str] | None = None
) -> Dataset:
    try:
        import tensorflow_datasets as tfds
    except Exception as e:  # not installed, or an install whose dependencies clash
        raise UserError(
            f"data source tfds needs tensorflow-datasets, which cannot be imported "
            f"({_short(_why(e))}): {_TFDS_INSTALL}"
        ) from None
    found = found or _find_tfds(spec, data_dir)
    if found is None:
        where = " or ".join(_short(r, 60) for r in _tfds_roots(data_dir))
        raise UserError(
            f"no prepared tensorflow-datasets copy of {spec.name} in {where}: prepare one with "
            f"`tfds build {spec.name} --file_format=array_record` (needs TensorFlow and network), "
            f"or use data source archive"
        )
    root, version = found
    where = f"{_short(root / spec.name / version)}"
    # Without verification any count goes; with it, only the official ones.
    n_train, n_test = OFFICIAL_COUNTS[spec.name]
    counts = {"train": n_train, "test": n_test} if verify else {}
    splits = _tfds_splits(tfds, spec, root, version, where, counts)
    names = None
    arrays = []
    for split in ("train", "test"):
        ids, images, labels, split_names = splits[split]
        names = names or split_names
        arrays += _tfds_official_order(spec, split, ids, images, labels, where)
    _check_tfds_names(spec, names, where)
    if not verify:
        _warn_unverified(f"the tfds copy in {where}")
    return _cifar_dataset(spec, *arrays, verify)


def _check_count(spec: _CifarSpec, split: str, n: int, counts: dict, where: str) -> None:
    if split in counts and n != counts[split]:
        raise UserError(
            f"{where}: the {split} split has {n:,} examples, the official {spec.title} "
            f"{counts[split]:,}: not a complete copy; prepare it again"
        )


def _tfds_splits(tfds, spec: _CifarSpec, root: Path, version: str, where: str, counts: dict):
    """{split: (ids, uint8[n, 32, 32, 3] images, int[n] labels, label names)} in tfds's order.

    ArrayRecord copies are read through tfds.data_source, without TensorFlow;
    TFRecord copies (tfds's default when preparing) need tfds.load and with it
    TensorFlow.  A split whose size is not in ``counts`` is refused before it
    is read.
    """
    name = f"{spec.name}:{version}"
    out = {}
    try:
        sources = {
            split: tfds.data_source(name, split=split, data_dir=str(root), download=False)
            for split in ("train", "test")
        }
        for split, source in sources.items():
            _check_count(spec, split, len(source), counts, where)
        for split, source in sources.items():
            out[split] = _read_data_source(source)
        return out
    except NotImplementedError:
        pass  # not stored in a format with random access: TFRecord
    except UserError:
        raise
    except Exception as e:  # tfds reports damaged or foreign copies in many ways
        raise UserError(
            f"tensorflow-datasets cannot read {where} ({_short(_why(e), 120)})"
        ) from None
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise UserError(
            f"{where} is stored as TFRecord, which only TensorFlow reads: pip install "
            f"tensorflow, or prepare an ArrayRecord copy with `tfds build {spec.name} "
            f"--file_format=array_record --data_dir DIR`"
        ) from None
    try:
        for split in ("train", "test"):
            ds, info = tfds.load(
                name,
                split=split,
                data_dir=str(root),
                download=False,
                batch_size=-1,
                with_info=True,
            )
            ex = tfds.as_numpy(ds)
            out[split] = (ex["id"], ex["image"], ex["label"], _label_names(info))
    except Exception as e:
        raise UserError(
            f"tensorflow-datasets cannot read {where} ({_short(_why(e), 120)})"
        ) from None
    for split, (ids, *_) in out.items():
        _check_count(spec, split, len(ids), counts, where)
    return out


def _read_data_source(source, batch: int = 1024):
    n = len(source)
    ids, labels = [], np.empty(n, np.int64)
    images = np.empty((n, 32, 32, 3), np.uint8)
    # Batches where the source reads them at once: ArrayRecord reads a batch in
    # parallel (all 60,000 examples in 23 s instead of 47 s one by one, on our
    # busy 2-core machine; parsing and PNG decoding take most of it).
    many = getattr(source, "__getitems__", None)
    for start in range(0, n, batch):
        keys = list(range(start, min(n, start + batch)))
        examples = many(keys) if many else [source[k] for k in keys]
        for i, ex in zip(keys, examples, strict=True):
            image = np.asarray(ex["image"])
            if image.shape != (32, 32, 3):
                raise UserError(f"a tfds example's image has shape {image.shape}, not (32, 32, 3)")
            ids.append(ex["id"])
            images[i] = image
            labels[i] = ex["label"]
    info = getattr(source, "dataset_info", None)
    return ids, images, labels, _label_names(info) if info is not None else None


def _label_names(info) -> list[str] | None:
    try:
        return list(info.features["label"].names)
    except (AttributeError, KeyError, TypeError):
        return None


def _check_tfds_names(spec: _CifarSpec, names, where: str) -> None:
    # A copy prepared by tfds names the classes from the official label file;
    # plain numbers stand for "no names recorded" (as in tfds's mocks).
    if names is None or names == [str(i) for i in range(len(spec.label_names))]:
        return
    if tuple(names) != spec.label_names:
        raise UserError(
            f"{where}: label names are not the official {spec.title} ones "
            f"({len(names)} names, first {_short(', '.join(map(str, names[:3])), 60)})"
        )


def _tfds_official_order(spec, split, ids, images, labels, where):
    """(uint8[n, 32, 32, 3], int32[n]) of one split, in the official order of its ids."""
    n = len(ids)
    pattern = re.compile(rf"{split}_(\d+)")
    index = np.empty(n, np.int64)
    for i, raw in enumerate(ids):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        m = pattern.fullmatch(text)
        if m is None or int(m.group(1)) >= n:
            raise UserError(
                f"{where}: example id {_short(repr(text), 40)} is not {split}_NNNNN with "
                f"NNNNN below {n:,}: not tfds's {spec.name}"
            )
        index[i] = int(m.group(1))
    if len(np.unique(index)) != n:  # n indices below n, all different: each exactly once
        raise UserError(f"{where}: the {split} split repeats example ids: not tfds's {spec.name}")
    order = np.argsort(index)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.shape != (n, 32, 32, 3) or images.dtype != np.uint8:
        raise UserError(
            f"{where}: {split} images are {images.dtype}{list(images.shape)}, "
            f"not uint8[{n}, 32, 32, 3]"
        )
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{where}: {split} labels are not {n} integers")
    k = len(spec.label_names)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise UserError(
            f"{where}: {split} labels must be in [0, {k - 1}], found {labels.min()}..{labels.max()}"
        )
    return [np.ascontiguousarray(images[order]), labels[order].astype(np.int32)]


# --------------------------------------------------------------------------
# Shared helpers.


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32[3] mean and std of ``images / 255`` per channel, exactly.

    Sums of values and of squares are taken in integers, a block of images at a
    time with whole rows added at once, which is ~50x faster than converting
    50,000 images to floats.  The variance then comes from exact integers.
    """
    flat = images.reshape(len(images), -1)
    s1 = np.zeros(flat.shape[1], np.uint64)
    s2 = np.zeros(flat.shape[1], np.uint64)
    for start in range(0, len(flat), 1024):  # 1024 * 255**2 fits in uint32
        block = flat[start : start + 1024]
        s1 += block.sum(axis=0, dtype=np.uint32)
        sq = block.astype(np.uint16)
        sq *= sq
        s2 += sq.sum(axis=0, dtype=np.uint32)
    n = flat.size // 3
    mean, std = np.zeros(3), np.zeros(3)
    for c in range(3):
        t1, t2 = int(s1[c::3].sum()), int(s2[c::3].sum())
        mean[c] = t1 / (255 * n)
        std[c] = np.sqrt((n * t2 - t1 * t1) / n**2) / 255
    return mean.astype(np.float32), std.astype(np.float32)


def _content_hash(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# Synthetic data.

SYNTHETIC_VERSION = "v1"
SYNTHETIC_SEED = 20251128
SYNTHETIC_MAX_CLASSES = 1000
SYNTHETIC_SIZES = (50_000, 10_000)  # train, test

# Each image, in grey levels, is
#     128 + class prototype + scene + brightness + noise,
# the prototype and the scene cropped at the same random offset (up to _PAD
# pixels each way) from patterns a little larger than the image.  The class
# prototype is a weak smooth pattern: learnable, but not from one glance.  The
# scene, one of _SCENES smooth patterns that say nothing about the class, and
# the per-pixel noise make every image different, so a model that sees few
# examples fits them one by one (members end with a much lower loss than
# non-members), as it does on real images.  Measured with the demo's CNN and
# optimiser (8 epochs): 100 examples -> train/test accuracy ~0.85/0.42, median
# loss 0.2 for members vs 1.4 for non-members; 300 examples -> ~0.98/0.60, 0.007
# vs 0.33.  Change any constant here and SYNTHETIC_VERSION must change too.
_PAD = 4
_CONTRAST = 20  # RMS of a class prototype
_SCENES = 256
_SCENE = 40  # RMS of a scene
_NOISE = 48  # noise is uniform in [-_NOISE, _NOISE)
_BRIGHTNESS = 32  # per-image offset, uniform in [-_BRIGHTNESS, _BRIGHTNESS]


def _raw(rng: np.random.Generator, n: int) -> np.ndarray:
    # Only the raw PCG64 stream is promised to stay the same across numpy
    # versions, so everything below is derived from it directly.
    return rng.bit_generator.random_raw(n)


def _below(rng: np.random.Generator, n: int, bound: int) -> np.ndarray:
    """int64[n] in [0, bound); the modulo bias of 64-bit draws is negligible."""
    return (_raw(rng, n) % np.uint64(bound)).astype(np.int64)


def _upsample_weights(k: int, size: int) -> np.ndarray:
    """int64[size, k]: linear interpolation from k coarse points to size fine ones.

    Integer weights, each row summing to 2 * size, so that upsampling is exact
    integer arithmetic.
    """
    # 2 * size * (position of fine pixel i on the coarse grid), clamped at the edges.
    pos = np.clip((2 * np.arange(size) + 1) * k - size, 0, (k - 1) * 2 * size)
    lo = pos // (2 * size)
    frac = pos - lo * 2 * size
    rows = np.arange(size)
    m = np.zeros((size, k), np.int64)
    np.add.at(m, (rows, lo), 2 * size - frac)
    np.add.at(m, (rows, np.minimum(lo + 1, k - 1)), frac)
    return m


def _patterns(rng: np.random.Generator, count: int, rms: int) -> np.ndarray:
    """int16[count, 32 + 2 PAD, 32 + 2 PAD, 3]: smooth random colour patterns.

    Each is a coarse 4x4 layout plus half as strong 8x8 detail, upsampled
    linearly and scaled to ``rms`` grey levels.  Only integer arithmetic is used
    (no BLAS, no float rounding), so the result is the same on every machine.
    """
    size = 32 + 2 * _PAD
    field = np.zeros((count, 3, size, size), np.int64)
    for k, weight in ((4, 2), (8, 1)):
        coarse = _below(rng, count * 3 * k * k, 255).reshape(count, 3, k, k) - 127
        m = _upsample_weights(k, size)
        field += weight * (m @ coarse @ m.T)
    per = field.reshape(count, -1)
    norms = np.array([max(1, math.isqrt(int(q) // per.shape[1])) for q in (per * per).sum(1)])
    # Round half up: floor((2 * field * rms + norm) / (2 * norm)).
    levels = (2 * rms * field + norms[:, None, None, None]) // (2 * norms[:, None, None, None])
    return np.ascontiguousarray(levels.transpose(0, 2, 3, 1)).astype(np.int16)


def _synthetic_split(rng: np.random.Generator, protos: np.ndarray, scenes: np.ndarray, n: int):
    """(uint8[n, 32, 32, 3], int32[n]) with every class n // C or n // C + 1 times."""
    num_classes = len(protos)
    labels = (np.arange(n) % num_classes)[np.argsort(_raw(rng, n), kind="stable")]
    scene = _below(rng, n, len(scenes))
    side = 2 * _PAD + 1
    shift = _below(rng, n, side * side)
    bright = (_below(rng, n, 2 * _BRIGHTNESS + 1) - _BRIGHTNESS + 128).astype(np.int16)
    images = np.empty((n, 32, 32, 3), np.uint8)
    # One pass per offset, gathering the cropped patterns straight from strided views.
    for s in range(side * side):
        dy, dx = divmod(s, side)
        rows = np.flatnonzero(shift == s)
        v = protos[:, dy : dy + 32, dx : dx + 32][labels[rows]]
        v += scenes[:, dy : dy + 32, dx : dx + 32][scene[rows]]
        v += bright[rows, None, None, None]
        # Eight noise bytes per raw draw, in a fixed byte order, mapped onto
        # [-_NOISE, _NOISE) grey levels.
        noise = _raw(rng, v.size // 8).astype("<u8").view(np.uint8).reshape(v.shape)
        noise = noise.astype(np.int16)
        noise -= 128
        noise *= _NOISE
        noise //= 128
        v += noise
        np.clip(v, 0, 255, out=v)
        images[rows] = v.astype(np.uint8)  # casting inside the scatter is ~20x slower
    return images, labels.astype(np.int32)


@functools.lru_cache(maxsize=2)
def _synthetic(num_classes: int) -> Dataset:
    def stream(i: int) -> np.random.Generator:
        # Separate streams for prototypes, train and test: changing one split's
        # size would leave the others as they are.
        return np.random.default_rng([SYNTHETIC_SEED, num_classes, i])

    protos = _patterns(stream(0), num_classes, _CONTRAST)
    scenes = _patterns(stream(3), _SCENES, _SCENE)
    n_train, n_test = SYNTHETIC_SIZES
    train = _synthetic_split(stream(1), protos, scenes, n_train)
    test = _synthetic_split(stream(2), protos, scenes, n_test)
    mean, std = _channel_stats(train[0])
    return Dataset(
        name="synthetic",
        train_images=_frozen(train[0]),
        train_labels=_frozen(train[1]),
        test_images=_frozen(test[0]),
        test_labels=_frozen(test[1]),
        class_names=tuple(f"class_{c:03d}" for c in range(num_classes)),
        synthetic=True,
        fingerprint=(
            f"synthetic:{SYNTHETIC_VERSION}:classes={num_classes}:seed={SYNTHETIC_SEED}"
            f":n={n_train}/{n_test}"
        ),
        mean=_frozen(mean),
        std=_frozen(std),
    )
