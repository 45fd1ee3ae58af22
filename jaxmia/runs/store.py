"""The run folder: who owns it, what identifies the run, and the finished chunks it keeps.

Layout of ``<output-dir>/<run-name>/``::

    run.json            the run's identity: results hash, config, data, how it computes
    .lock               held (fcntl) by the one process that writes here
    chunks/             one file per finished chunk, named with its SHA-256
    config.yaml, losses.npz, *.png, results.json   the products (products.py)

Rules that keep a user's files safe:

* A folder is a jaxmia run folder only if its ``run.json`` says so.  jaxmia
  writes into an existing folder only when it is empty or such a run folder,
  and ``--fresh`` deletes only the files jaxmia itself writes (the products
  the caller names, ``chunks/chunk-*``, its temporary files), never the
  folder's other contents.
* One process at a time: an exclusive ``flock`` on ``.lock``, released by the
  kernel when the process ends, however it ends.
* A chunk file carries the SHA-256 of its bytes in its name.  Anything that
  cannot be read and verified is renamed ``*.corrupt`` and its models are
  trained again; nothing half-written is ever read as a result.  A chunk of
  another run is not damaged: it is skipped and left as it is.
* Nothing is followed out of the run folder: the lock is opened with
  O_NOFOLLOW, temporary files are created O_EXCL | O_NOFOLLOW and renamed over
  (never written through) a link, a ``chunks/`` that resolves outside the
  folder is refused, and a chunk file that links out of it is neither read,
  renamed nor deleted through.  Only temporaries named like jaxmia's own
  (``fileio.TEMPORARY_PATTERN``, of a file jaxmia writes there) are removed.
* A run folder is resumed only with the same results hash (the config keys that
  decide the numbers, the data's fingerprint) and the same execution (conv,
  strategy, compute dtype, backend, models per device under vmap, jax and
  jaxlib versions): each decides the last bits of a loss, and a run must not
  mix chunks computed two ways.

Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from jaxmia.errors import UserError, show
from jaxmia.fileio import TEMPORARY_PATTERN as _TMP
from jaxmia.fileio import atomic_write_bytes, temporary_name
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import Job

RUN_MARK = "jaxmia run folder"
LOCK_NAME = ".lock"
CHUNKS = "chunks"
_CHUNK = re.compile(r"^chunk-[A-Za-z0-9-]+\.[0-9a-f]{64}\.npz(\.corrupt)?$")


def chunk_name(first: Job, last: Job, digest: str) -> str:
    """The file name of a chunk holding the jobs ``first`` .. ``last``, SHA-256 ``digest``."""
    return (
        f"chunk-s{first.stream}-r{first.round:07d}m{int(first.member)}"
        f"-r{last.round:07d}m{int(last.member)}.{digest}.npz"
    )


def longest_names() -> tuple[str, ...]:
    """The longest path, below the run folder, of a file jaxmia writes there (its parts):
    a chunk's temporary file, the chunk of the highest rounds a config allows."""
    top = Job(9, 9_999_999, True)
    return (CHUNKS, temporary_name(chunk_name(top, top, "f" * 64), "x" * 8))


# Linux's PATH_MAX is 4096 bytes with the closing NUL: a path has at most 4095.  The run
# folder's path must leave room for the longest name jaxmia writes inside it.
PATH_MAX_BYTES = 4095
LONGEST_SUFFIX_BYTES = sum(1 + len(os.fsencode(part)) for part in longest_names())


def check_output_path(output_dir, run_name: str) -> Path:
    """The run folder's path, after checks that need no file system access."""
    raw = os.fspath(output_dir)
    if "\x00" in raw:
        raise UserError(f"--output-dir must not contain a NUL byte, got {show(raw)}")
    run_dir = Path(raw) / run_name
    size = len(os.fsencode(os.path.abspath(run_dir)))
    room = PATH_MAX_BYTES - LONGEST_SUFFIX_BYTES
    if size > room:
        raise UserError(
            f"the run folder's path is {size} bytes long; with the longest file jaxmia writes "
            f"in it ({LONGEST_SUFFIX_BYTES} bytes more) it passes the system's limit of "
            f"{PATH_MAX_BYTES}: keep --output-dir and --run-name within {room} bytes together"
        )
    for part in Path(raw).parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(
                f"--output-dir has a folder name over 255 bytes (the file system's limit): "
                f"{show(part)}"
            )
    return run_dir


def _describe_change(old: dict, new: dict) -> str:
    """Says what differs between two run identities, data first."""
    if old.get("data_fingerprint") != new.get("data_fingerprint"):
        return (
            f"the data changed (fingerprint {show(old.get('data_fingerprint'), 40)} "
            f"-> {show(new.get('data_fingerprint'), 40)})"
        )
    if old.get("jaxmia_version") != new.get("jaxmia_version"):
        return (
            f"it was written by jaxmia {show(old.get('jaxmia_version'), 20)}, "
            f"this is {show(new.get('jaxmia_version'), 20)}"
        )
    old_cfg, new_cfg = old.get("config") or {}, new.get("config") or {}
    keys = new.get("hashed_keys") or sorted(new_cfg)
    changed = [k for k in keys if old_cfg.get(k) != new_cfg.get(k)]
    if changed:
        shown = ", ".join(
            f"{k}: {show(old_cfg.get(k), 20)} -> {show(new_cfg.get(k), 20)}" for k in changed[:3]
        )
        return f"the configuration changed ({shown})"
    old_ex, new_ex = old.get("execution") or {}, new.get("execution") or {}
    changed = [k for k in sorted(set(old_ex) | set(new_ex)) if old_ex.get(k) != new_ex.get(k)]
    if changed:
        shown = ", ".join(
            f"{_EXECUTION_WORDS.get(k, k)}: {show(old_ex.get(k), 20)} -> {show(new_ex.get(k), 20)}"
            for k in changed[:3]
        )
        advice = "; ".join(_restore(k, old_ex.get(k)) for k in changed[:3])
        return (
            f"the computation changed ({shown}), which changes the last bits of the losses; "
            f"to resume: {advice}"
        )
    return "its identity differs"


# The execution record's fields, in words, and how a user gets the old value back:
# only some of them are config keys.
_EXECUTION_WORDS = {"models_per_device": "models per device under vmap"}


def _restore(field: str, old) -> str:
    if field in ("conv", "strategy", "compute_dtype"):
        return f"set {field}: {old}"
    if field == "models_per_device":
        return f"set models_per_chunk to {old} times the number of devices"
    if field == "backend":
        return f"run it on a {old} machine"
    if field in ("jax", "jaxlib"):
        return f"install {field} {old}"
    return f"restore {field} {show(old, 20)}"


_RUN_HINT = "jaxmia will not write into it: choose another --run-name or --output-dir"


def read_identity(run_dir: Path, hint: str = _RUN_HINT) -> dict:
    """The identity recorded in a jaxmia run folder; UserError for any other folder.

    ``hint`` ends the message: what to do instead (the run's advice by default).
    """
    meta = run_dir / "run.json"
    if not meta.is_file():
        raise UserError(
            f"{show(str(run_dir))} exists and is not a jaxmia run folder (no run.json); {hint}"
        )
    try:
        old = json.loads(meta.read_text())
        if not isinstance(old, dict) or old.get("jaxmia") != RUN_MARK:
            raise ValueError
        if not isinstance(old.get("results_hash"), str):
            raise ValueError
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserError(
            f"{meta} is not a jaxmia run's run.json (unreadable or foreign); jaxmia will "
            f"not touch this folder{'' if hint == _RUN_HINT else '; ' + hint}"
            f"{': choose another --run-name or --output-dir' if hint == _RUN_HINT else ''}"
        ) from None
    return old


def train_size(identity: dict) -> int | None:
    """The training set's size a run's indices refer to: run.json's ``train_size``, or, in
    folders written before it was recorded, the size its data fingerprint names (the
    synthetic data's "n=50000/10000", the official CIFAR's 50,000); None when unknown
    (data taken on the user's word, of any size)."""
    n = identity.get("train_size")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    parts = str(identity.get("data_fingerprint") or "").split(":")
    sized = [p[2:].split("/")[0] for p in parts if p.startswith("n=")]
    if parts[0] == "synthetic" and sized and sized[0].isdigit():
        return int(sized[0])
    if parts[0] in ("cifar10", "cifar100") and parts[1:2] != ["unverified"]:
        return 50_000  # data.OFFICIAL_COUNTS, checked when the run loaded the data
    return None


def lock_folder(run_dir: Path) -> int:
    """Takes the folder's exclusive lock (fcntl); returns its fd.

    Raises:
      UserError: the lock is held by another process, is a symbolic link (never
        followed: jaxmia truncates its lock file), or cannot be created (a read-only
        folder).
    """
    import fcntl

    path = run_dir / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise UserError(
                f"{path} is a symbolic link; jaxmia writes its lock there and never follows "
                "a link out of its run folder: remove the link"
            ) from None
        raise UserError(
            f"cannot lock {show(str(run_dir))}: {e.strerror or e} (jaxmia writes its "
            "products there, so the folder must be writable)"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = os.pread(fd, 64, 0).decode().strip()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = f"process {holder}" if holder else "another process"
            raise UserError(
                f"{run_dir} is in use by {who}; wait for it to finish, or choose another --run-name"
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class RunStore:
    """One run folder, locked by this process.  Create with ``RunStore.open``."""

    def __init__(self, run_dir: Path, identity: dict, lock_fd: int, product_files=()):
        self.run_dir = Path(run_dir)
        self.product_files = tuple(product_files)
        self.identity = identity
        self.run_hash = identity["results_hash"]
        self.chunk_dir = self.run_dir / CHUNKS
        self._lock_fd = lock_fd

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, run_dir, identity: dict, *, fresh: bool = False, product_files=()) -> RunStore:
        """Creates, re-opens or (fresh) clears a run folder, and locks it.

        ``identity`` holds ``results_hash``, ``data_fingerprint``, ``config``,
        ``execution`` and ``jaxmia_version``; ``product_files`` names the files
        at the top of the folder that ``fresh`` deletes (config.yaml,
        results.json, the arrays, tables and figures: ``kinds.product_files``).
        Refuses (UserError, nothing touched) a path that is not a folder, a
        non-empty folder that is not a jaxmia run, a run folder held by another
        process, and one whose run differs from this one unless ``fresh``.
        """
        run_dir = Path(run_dir)
        try:
            return cls._open(run_dir, identity, fresh, product_files)
        except OSError as e:
            raise UserError(f"cannot use {show(str(run_dir))}: {e.strerror or e}") from None

    @classmethod
    def _open(cls, run_dir: Path, identity: dict, fresh: bool, product_files) -> RunStore:
        for p in (run_dir, *run_dir.parents):
            if p.is_symlink() and not p.exists():
                raise UserError(
                    f"output path {show(str(p))} is a symbolic link to "
                    f"{show(os.readlink(p))}, which does not exist"
                )
            if p.exists() and not p.is_dir():
                raise UserError(f"output path {show(str(p))} exists and is not a folder")
        if run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            read_identity(run_dir)  # refuses a folder jaxmia did not make
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_chunk_folder(run_dir)
        fd = lock_folder(run_dir)
        try:
            old = read_identity(run_dir) if (run_dir / "run.json").exists() else None
            if old is not None and not fresh:
                same = old.get("results_hash") == identity["results_hash"] and old.get(
                    "execution"
                ) == identity.get("execution")
                if not same:
                    raise UserError(
                        f"{run_dir} holds another run: {_describe_change(old, identity)}; "
                        "choose another --run-name or --output-dir, or pass --fresh to "
                        "replace its results"
                    )
            store = cls(run_dir, identity, fd, product_files)
            if fresh:
                store._delete_own_files({identity["results_hash"], (old or {}).get("results_hash")})
            store._clean_temporaries()
            body = {"jaxmia": RUN_MARK, **identity}
            atomic_write_bytes(run_dir / "run.json", (json.dumps(body, indent=2) + "\n").encode())
            store.chunk_dir.mkdir(exist_ok=True)
            return store
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def peek(cls, run_dir) -> dict | None:
        """The identity a run folder records, or None (no folder, not a jaxmia run)."""
        try:
            return read_identity(Path(run_dir))
        except (UserError, OSError):
            return None

    def close(self) -> None:
        """Releases the lock (the kernel also does when the process ends)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _delete_own_files(self, own_hashes) -> None:
        """--fresh: removes what jaxmia wrote here for this folder's runs (``own_hashes``:
        the run run.json recorded and the new one), and nothing else: a chunk of another
        run is left as it is (``load`` says so, as on a plain start); a link named like one
        of its files is removed itself, what it points to is never touched."""
        for name in self.product_files:
            (self.run_dir / name).unlink(missing_ok=True)
        if self.chunk_dir.is_dir():
            for p in self.chunk_dir.iterdir():
                if _CHUNK.match(p.name) and not p.is_symlink():
                    other = _chunk_run_hash(p)
                    if other is not None and other not in own_hashes:
                        continue  # load() says so, in the line a plain start gives it
                if _CHUNK.match(p.name) or self._own_temporary(p):
                    p.unlink()
            if not self.chunk_dir.is_symlink():
                with contextlib.suppress(OSError):
                    self.chunk_dir.rmdir()  # only if nothing else is in it

    def _own_temporary(self, p: Path) -> bool:
        """Whether ``p`` is a temporary file of jaxmia's own: named by fileio after a file
        jaxmia writes in that folder (run.json and the products here, chunks in chunks/)."""
        m = _TMP.match(p.name)
        if not m:
            return False
        if p.parent == self.chunk_dir:
            return bool(_CHUNK.match(m["name"]))
        return m["name"] in ("run.json", *self.product_files)

    def _clean_temporaries(self) -> None:
        """Removes the temporary files a killed run left behind (ours only)."""
        for folder in (self.run_dir, self.chunk_dir):
            if folder.is_dir():
                for p in folder.iterdir():
                    if self._own_temporary(p) and (p.is_file() or p.is_symlink()):
                        p.unlink(missing_ok=True)

    # ------------------------------------------------------------ chunks

    def save_chunk(self, outputs: ModelOutputs) -> Path:
        """Writes one finished chunk atomically; its name carries the SHA-256 of its bytes."""
        jobs = outputs.jobs()
        buf = io.BytesIO()
        np.savez(buf, run_hash=np.array(self.run_hash), **outputs.to_arrays())
        data = buf.getvalue()
        path = self.chunk_dir / chunk_name(jobs[0], jobs[-1], hashlib.sha256(data).hexdigest())
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            raise UserError(f"cannot write chunk to {self.chunk_dir}: {e.strerror or e}") from None
        return path

    def load(self) -> ModelOutputs | None:
        """Every model finished on disk, as one record (None when there is none).

        A file that fails to read, verify or parse is set aside as ``.corrupt``
        (with one warning line) and its models count as not trained.  A chunk of
        another run, or one that links out of the run folder, is skipped with one line
        and left as it is.
        """
        parts = []
        for path in sorted(self.chunk_dir.glob("chunk-*.npz")):
            if path.is_symlink() and not _inside(path, self.run_dir):
                _warn(
                    f"{path.name} is a symbolic link out of the run folder; not read, "
                    "its models are trained again"
                )
                continue
            try:
                parts.append(self._read_chunk(path))
            except _OtherRun as e:
                _warn(f"{path.name} belongs to another run ({e}); left as it is, not used")
            except Exception as e:  # noqa: BLE001 - any failure means: train these again
                reason = show(f"{type(e).__name__}: {e}", 100)
                if path.is_symlink():
                    _warn(f"{path.name} cannot be read ({reason}); its models are trained again")
                    continue
                _warn(
                    f"{path.name} is damaged ({reason}); set aside as .corrupt, its models "
                    "are trained again"
                )
                os.replace(path, path.with_name(path.name + ".corrupt"))
        return ModelOutputs.concat(parts)

    def _read_chunk(self, path: Path) -> ModelOutputs:
        m = _CHUNK.match(path.name)
        if not m:
            raise ValueError("its name carries no checksum")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != path.name.split(".")[-2]:
            raise ValueError("checksum mismatch")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        other = str(arrays.pop("run_hash", ""))
        if other != self.run_hash:
            raise _OtherRun(f"run hash {show(other, 20)}, this run's is {self.run_hash}")
        return ModelOutputs.from_arrays(arrays)


def _chunk_run_hash(path: Path) -> str | None:
    """The run hash a chunk file records, or None when it cannot be read (damaged)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["run_hash"])
    except Exception:  # noqa: BLE001 - an unreadable chunk is nobody's for certain
        return None


class _OtherRun(ValueError):
    """A sound chunk written by another run."""


def _warn(text: str) -> None:
    print(f"jaxmia: warning: {text}", file=sys.stderr)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, its links followed, lies inside ``folder`` (links followed too)."""
    target = Path(os.path.realpath(path))
    root = Path(os.path.realpath(folder))
    return target == root or root in target.parents


def _check_chunk_folder(run_dir: Path) -> None:
    """Refuses a chunks/ that is a file or resolves outside the run folder (UserError):
    jaxmia renames and deletes chunk files, and must never do so in another folder."""
    chunks = run_dir / CHUNKS
    if chunks.is_symlink() and not _inside(chunks, run_dir):
        raise UserError(
            f"{chunks} is a symbolic link to {show(os.path.realpath(chunks))}, outside the run "
            "folder; jaxmia keeps a run's chunks inside its folder and never follows a link "
            "out of it: remove the link (chunks of another run are never shared)"
        )
    if chunks.exists() and not chunks.is_dir():
        raise UserError(f"{chunks} exists and is not a folder")
