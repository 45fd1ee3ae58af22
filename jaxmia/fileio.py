"""Writing files so that a crash never leaves half of one: atomic bytes, text, JSON and npz.

Every file is written to a temporary file in the destination folder, flushed to
disk and then renamed over the destination with ``os.replace``, so a crash or a
full disk leaves either the old file or the new one, never half of one. OSErrors
(ENOSPC, EACCES, ...) propagate unchanged; the caller turns them into one user
error.  The temporary files are named ``.<name>.<8 random characters>.tmp``
(``temporary_name``, ``TEMPORARY_PATTERN``, whose ``name`` group is the file it
was to become), so a later run can recognise and remove the ones a killed run
left behind, and only those.

Nothing is written through a symbolic link: the temporary file is created with
O_EXCL | O_NOFOLLOW, and ``os.replace`` replaces a link named like the
destination by the new file rather than writing where it points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import secrets
from pathlib import Path

import numpy as np

__all__ = [
    "TEMPORARY_PATTERN",
    "atomic_write_bytes",
    "temporary_name",
    "atomic_write_text",
    "npz_bytes",
    "to_jsonable",
    "write_json",
    "write_npz",
]

# What atomic_write_bytes leaves if killed: "." + the destination's name + "." + 8
# characters + ".tmp" (older versions' tempfile names have the same form).
TEMPORARY_PATTERN = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_TOKEN_BYTES = 4  # 8 hex characters
_CREATE = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def temporary_name(name: str, token: str | None = None) -> str:
    """The name of the temporary file that becomes ``name`` (random ``token`` by default)."""
    return f".{name}.{token if token is not None else secrets.token_hex(_TOKEN_BYTES)}.tmp"


def _default_file_mode() -> int:
    # The temporary file is created 0600; give the result the mode a plain open() would.
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
    if path.is_file() and not path.is_symlink():
        mode = path.stat().st_mode & 0o7777
    else:
        mode = _default_file_mode()
    for _ in range(100):
        tmp = path.with_name(temporary_name(path.name))
        try:
            fd = os.open(tmp, _CREATE, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name for {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
