"""Writing files so that a crash never leaves half of one: atomic bytes, text, JSON and npz.

Every file is written to a temporary file in the destination folder, flushed to
disk and then renamed over the destination with ``os.replace``, so a crash or a
full disk leaves either the old file or the new one, never half of one. OSErrors
(ENOSPC, EACCES, ...) propagate unchanged; the caller turns them into one user
error.  The temporary files are named ``.<name>.<random>.tmp``
(``TEMPORARY_PATTERN``), so a later run can recognise and remove the ones a
killed run left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "TEMPORARY_PATTERN",
    "atomic_write_bytes",
    "atomic_write_text",
    "npz_bytes",
    "to_jsonable",
    "write_json",
    "write_npz",
]

TEMPORARY_PATTERN = re.compile(r"^\..+\.tmp$")  # what atomic_write_bytes leaves if killed


def _default_file_mode() -> int:
    # tempfile creates files 0600; give the result the mode a plain open() would.
    # os.umask can only be read by setting it, so set it back straight away.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically; returns ``path`` as a Path.

    The temporary file sits next to ``path`` (same filesystem, so the rename is
    atomic) and is removed again if anything fails before the rename.
    """
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o7777
    else:
        mode = _default_file_mode()
    tmp = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.fchmod(tmp.fileno(), mode)
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Writes ``text`` to ``path`` atomically (see ``atomic_write_bytes``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def to_jsonable(obj):
    """Converts ``obj`` to plain JSON types.

    numpy scalars and arrays become Python numbers and lists, tuples become
    lists, Paths become strings, dataclasses become dicts. Non-finite floats
    (NaN, +inf, -inf) become None (JSON null): JSON has no spelling for them,
    and a null is what a reader should see for "no number". Anything else
    raises TypeError, since it is a bug to put it in a report.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def write_json(path, obj) -> Path:
    """Writes ``obj`` as indented JSON (keys in insertion order); NaN/inf become null."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def npz_bytes(arrays: dict) -> bytes:
    """The bytes ``np.savez`` (uncompressed) writes for ``arrays``."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_npz(path, /, **arrays) -> Path:
    """Saves ``arrays`` with ``np.savez`` (uncompressed) to ``path`` atomically."""
    return atomic_write_bytes(path, npz_bytes(arrays))
