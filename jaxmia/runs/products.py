"""Writing a run's products as one consistent set.

The products of a run folder are ``config.yaml``, the raw arrays
(``losses.npz``, ``targets.npz`` or ``population.npz``, by experiment), tables,
the PNG figures and ``results.json``.  They must never mix two states
of a run (results of 100 rounds beside losses of 120), so:

1. ``results.json`` is removed first: while the set is being rewritten the
   folder shows no results at all rather than stale ones;
2. the raw arrays, the config and the figures are written (each atomically),
   figures a run no longer wants (``save_plots: false``) are removed;
3. ``results.json`` is written last and records the SHA-256 of the arrays
   file it was computed from (``losses_sha256``).

A run also keeps its own record (RUN_KEYS: timing, devices, how it computed)
in ``record.json``, written before ``results.json``; ``jaxmia analyze`` never
rewrites it, and restores the record from it when ``results.json`` is gone.

A run killed anywhere in between leaves no ``results.json``, and the next run
(or ``jaxmia analyze``) writes the set again from the kept chunks.  The
PyTorch baseline writes its products through the same function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import yaml

from jaxmia import fileio
from jaxmia.errors import UserError

# results.json keys that describe how a run was executed rather than what it
# found; ``jaxmia analyze`` carries them over unchanged.
RUN_KEYS = (
    "compile_seconds",
    "train_seconds",
    "models_trained",
    "models_reused",
    "models_per_second",
    "image_steps_per_second",
    "models_per_chunk",
    "devices",
    "backend",
    "conv",
    "strategy",
    "results_hash",
    "jaxmia_version",
)


RECORD_FILE = "record.json"  # the run's RUN_KEYS, kept apart from the rewritable results


def read_record(run_dir: Path) -> dict | None:
    """The run's record (RUN_KEYS) from ``record.json``; None when the folder has none
    (written before it was kept) or it is not a readable JSON object of those keys."""
    import json

    path = Path(run_dir) / RECORD_FILE
    try:
        if path.is_symlink() or not path.is_file():
            return None
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    return {k: record[k] for k in RUN_KEYS if k in record}


SYNTHETIC_NOTE = "# SYNTHETIC DATA: not CIFAR\n"
UNVERIFIED_NOTE = "# UNVERIFIED DATA: not checked against the official checksums\n"


def write_products(
    run_dir: Path,
    *,
    config: dict,
    arrays: dict | None,
    results: dict,
    figures: Callable[[Path], list] | None,
    figure_files: tuple[str, ...],
    synthetic: bool,
    arrays_name: str,
    tables: Callable[[Path], None] | None = None,
    unverified: bool = False,
    between: Callable[[], None] | None = None,
    record: dict | None = None,
) -> dict:
    """Writes the set in the order above; returns ``results`` with ``losses_sha256``.

    ``figures(folder)`` draws the PNGs into ``folder`` (None: no figures, and
    the old ones, ``figure_files``, are removed).  ``arrays=None`` keeps the
    arrays file ``arrays_name`` on disk as it is (``jaxmia analyze``) and
    records its hash.  ``record`` (a finished run's RUN_KEYS; None from ``jaxmia
    analyze``) is written to ``record.json`` before results.json.  ``between()`` runs
    before each step and may raise to stop
    (``interrupt.StopFlag.check``): the exception then carries
    ``products_begun``, whether results.json was already removed.  OSErrors become
    one UserError line.
    """
    run_dir = Path(run_dir)
    begun = False

    def step():
        if between is not None:
            between()

    try:
        step()
        begun = True
        (run_dir / "results.json").unlink(missing_ok=True)
        text = yaml.safe_dump(config, sort_keys=False)
        notes = (UNVERIFIED_NOTE if unverified else "") + (SYNTHETIC_NOTE if synthetic else "")
        fileio.atomic_write_text(run_dir / "config.yaml", notes + text)
        step()
        if arrays is None:
            data = (run_dir / arrays_name).read_bytes()
        else:
            data = fileio.npz_bytes(arrays)
            fileio.atomic_write_bytes(run_dir / arrays_name, data)
        step()
        if tables is not None:
            tables(run_dir)
            step()
        if figures is None:
            for name in figure_files:
                (run_dir / name).unlink(missing_ok=True)
        else:
            figures(run_dir)
        step()
        if record is not None:
            fileio.write_json(run_dir / RECORD_FILE, record)
        results = {**results, "losses_sha256": hashlib.sha256(data).hexdigest()}
        fileio.write_json(run_dir / "results.json", results)
    except OSError as e:
        raise UserError(f"cannot write results to {run_dir}: {e.strerror or e}") from None
    except Exception as e:
        e.products_begun = begun
        raise
    return results
