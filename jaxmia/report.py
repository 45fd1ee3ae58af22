"""Writing the run's products (JSON, npz, text) atomically, and the console summary.

Every file is written to a temporary file in the destination folder, flushed to
disk and then renamed over the destination with ``os.replace``, so a crash or a
full disk leaves either the old file or the new one, never half of one. OSErrors
(ENOSPC, EACCES, ...) propagate unchanged; the caller turns them into one user
error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "format_summary",
    "to_jsonable",
    "write_json",
    "write_npz",
]


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


def write_npz(path, /, **arrays) -> Path:
    """Saves ``arrays`` with ``np.savez`` (uncompressed) to ``path`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- console summary


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _f(x, digits: int = 4) -> str:
    """A number to ``digits`` decimals; NaN and inf spelled out."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _ci(ci) -> str:
    lo, hi = ci
    return f"[{_f(lo)}, {_f(hi)}]"


def format_summary(results: dict) -> str:
    """The console summary of a run, from the results dict written to results.json.

    Keys used (any of them may be missing or None; its line is then left out):
    dataset, synthetic, target_index, target_label, n_iterations, subset_size,
    epochs, alpha, threshold, power, fpr, gaussian_threshold, gaussian_power,
    auc, member_loss_mean/std, nonmember_loss_mean/std, rounds_used, skipped,
    evaluation (from ``stats.evaluate_predictions``), train_accuracy,
    test_accuracy, compile_seconds, train_seconds, models_per_second.
    """
    r = {k: v for k, v in results.items() if v is not None}
    lines: list[str] = []

    def num(key):
        return _is_number(r.get(key))

    if r.get("synthetic"):
        lines.append(
            "[SYNTHETIC DATA] synthetic images, not a real data set: numbers are not CIFAR"
        )
    if "dataset" in r:
        lines.append(
            f"Dataset: {r['dataset']}" + (" [SYNTHETIC DATA]" if r.get("synthetic") else "")
        )
    if "target_index" in r:
        label = f" ({r['target_label']})" if "target_label" in r else ""
        lines.append(f"Target index: {r['target_index']}{label}")
    if "n_iterations" in r:
        extra = []
        if "subset_size" in r:
            extra.append(f"subset size {r['subset_size']}")
        if "epochs" in r:
            extra.append(f"{r['epochs']} epochs")
        tail = f" ({', '.join(extra)})" if extra else ""
        lines.append(f"Rounds (with/without pairs): {r['n_iterations']}{tail}")
    if "rounds_used" in r and r["rounds_used"] != r.get("n_iterations"):
        lines.append(f"Rounds used: {r['rounds_used']} (the rest had non-finite losses)")
    if num("threshold"):
        bound = f" (FPR <= {r['alpha']:g})" if num("alpha") else ""
        lines.append(f"Threshold{bound}: {_f(r['threshold'])}")
    if num("power"):
        lines.append(f"Power (TPR): {_f(r['power'])}")
    if num("fpr"):
        lines.append(f"Empirical FPR: {_f(r['fpr'])}")
    for key, who in (("member", "member"), ("nonmember", "non-member")):
        if num(f"{key}_loss_mean"):
            spread = f" ± {_f(r[f'{key}_loss_std'])}" if num(f"{key}_loss_std") else ""
            lines.append(f"Mean loss {who}: {_f(r[f'{key}_loss_mean'])}{spread}")
    if num("gaussian_threshold"):
        lines.append(f"Gaussian threshold: {_f(r['gaussian_threshold'])}")
    if num("gaussian_power"):
        lines.append(f"Gaussian power: {_f(r['gaussian_power'])}")
    if num("auc"):
        lines.append(f"AUC: {_f(r['auc'])}")

    ev = r.get("evaluation")
    if isinstance(ev, dict):
        lines.append("Evaluation (held-out models):")
        for item in ev.get("items") or []:
            where = "x in train:    " if item.get("member") else "x not in train:"
            loss = _f(item["loss"]) if _is_number(item.get("loss")) else "nan"
            lines.append(
                f"  {where}  loss={loss}  predicted member={item.get('predicted_member')}"
                f"  correct={item.get('correct')}"
            )
        for key, name in (("tpr", "TPR"), ("fpr", "FPR")):
            if _is_number(ev.get(key)):
                ci = ev.get(f"{key}_ci")
                ci_text = f"  95% CI {_ci(ci)}" if ci else ""
                lines.append(f"  {name}: {_f(ev[key])}{ci_text}")
        if _is_number(ev.get("accuracy")):
            lines.append(f"  Accuracy: {_f(ev['accuracy'])}")

    if num("train_accuracy"):
        lines.append(f"Train accuracy (mean over models): {_f(r['train_accuracy'])}")
    if num("test_accuracy"):
        lines.append(f"Test accuracy (mean over models): {_f(r['test_accuracy'])}")
    timing = []
    if num("compile_seconds"):
        timing.append(f"compile {r['compile_seconds']:.1f} s")
    if num("train_seconds"):
        timing.append(f"training {r['train_seconds']:.1f} s")
    if num("models_per_second"):
        timing.append(f"{r['models_per_second']:.2f} models/s")
    if timing:
        lines.append("Time: " + ", ".join(timing))
    return "\n".join(lines)
