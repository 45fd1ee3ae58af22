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


def _header(r: dict) -> list[str]:
    lines = []
    if r.get("synthetic"):
        lines.append(
            "[SYNTHETIC DATA] synthetic images, not a real data set: numbers are not CIFAR"
        )
    if "dataset" in r:
        lines.append(
            f"Dataset: {r['dataset']}" + (" [SYNTHETIC DATA]" if r.get("synthetic") else "")
        )
    return lines


def _footer(r: dict) -> list[str]:
    lines = []
    timing = []
    if _is_number(r.get("compile_seconds")):
        timing.append(f"compile {r['compile_seconds']:.1f} s")
    if _is_number(r.get("train_seconds")):
        timing.append(f"training {r['train_seconds']:.1f} s")
    if _is_number(r.get("models_per_second")):
        timing.append(f"{r['models_per_second']:.2f} models/s")
    if timing:
        lines.append("Time: " + ", ".join(timing))
    warnings = r.get("warnings") or []
    if warnings:
        lines.append(f"Warnings ({len(warnings)}):")
        lines.extend(f"  ! {w}" for w in warnings)
    return lines


def _mean_ci(entry) -> str:
    if not isinstance(entry, dict) or not _is_number(entry.get("mean")):
        return "n/a"
    text = _f(entry["mean"])
    if entry.get("ci"):
        text += f"  95% CI {_ci(entry['ci'])}"
    return text


def format_population(r: dict) -> str:
    """The console summary of a population-attack run (analysis_population's results)."""
    lines = _header(r)
    lines.append(
        f"Population attack: {r.get('repetitions_used')} of {r.get('repetitions')} target "
        f"models, {r.get('n_member')} members and {r.get('n_nonmember')} non-members each "
        f"(score {r.get('score')}, rule {r.get('threshold_rule')}, alpha {r.get('alpha')})"
    )
    summary = r.get("summary") or {}
    for key, name in (
        ("auc", "AUC"),
        ("balanced_accuracy", "Balanced accuracy"),
        ("average_precision", "Average precision"),
    ):
        lines.append(f"{name}: {_mean_ci(summary.get(key))}")
    for fpr, entry in (summary.get("tpr_at_fpr") or {}).items():
        lines.append(f"TPR at FPR {float(fpr):.1%}: {_mean_ci(entry)}")
    for key, name in (("alpha_rule", "Threshold at alpha"), ("yeom", "Yeom rule")):
        part = summary.get(key) or {}
        lines.append(
            f"{name}: threshold {_mean_ci(part.get('threshold'))}; TPR {_mean_ci(part.get('tpr'))}"
            f"; FPR {_mean_ci(part.get('fpr'))}"
        )
    return "\n".join(lines + _footer(r))


def format_targets(r: dict) -> str:
    """The console summary of a many-targets run (analysis_targets's results)."""
    lines = _header(r)
    keys = ("n_targets", "n_models_used", "n_models", "score", "threshold_rule", "alpha")
    t, used, m, score, rule, alpha = (r.get(k) for k in keys)
    lines.append(
        f"Many targets: {t} targets scored by {used} of {m} models "
        f"(score {score}, rule {rule}, alpha {alpha})"
    )
    if _is_number(r.get("auc_median")):
        lines.append(
            f"Per-target AUC: median {_f(r['auc_median'])}, quartiles "
            f"[{_f(r.get('auc_q1'))}, {_f(r.get('auc_q3'))}], mean {_f(r.get('auc_mean'))}"
        )
    most = r.get("most_vulnerable") or []
    if most:
        shown = ", ".join(
            f"{m.get('index')} ({m.get('label')}, AUC {_f(m.get('auc'))})" for m in most[:5]
        )
        lines.append(f"Most vulnerable: {shown}")
    if _is_number(r.get("n_power_at_least_half")):
        lines.append(f"Targets with power >= 0.5 at alpha: {r['n_power_at_least_half']}")
    ev = r.get("evaluation")
    if isinstance(ev, dict):
        for key, name in (("tpr", "TPR"), ("fpr", "FPR")):
            if _is_number(ev.get(key)):
                ci = ev.get(f"{key}_ci")
                lines.append(
                    f"Evaluation {name} (pooled over targets): {_f(ev[key])}"
                    + (f"  95% CI {_ci(ci)}" if ci else "")
                )
    return "\n".join(lines + _footer(r))


def format_summary(results: dict) -> str:
    """The console summary of a run, from the results dict written to results.json.

    Population and many-targets runs have their own (format_population,
    format_targets); the rest of this docstring is the single-target summary.

    Keys used (any of them may be missing or None; its line is then left out):
    dataset, synthetic, target_index, target_label, n_iterations, subset_size,
    epochs, rounds_used, and the attack's keys from ``attack.summary.summarize`` (score,
    threshold_rule, alpha, decision, threshold, threshold_scale, power,
    calibration_fpr or fpr, k, n_member, n_nonmember, expected_heldout_fpr(_upper95),
    auc, balanced_accuracy, tpr_at_fpr, member/nonmember_loss (or score) mean/std,
    gaussian_threshold, gaussian_power, evaluation, epsilon_lower_bound, warnings; the
    loss-only summaries and evaluations of jaxmia before the attack library print too),
    train_accuracy, test_accuracy, compile_seconds, train_seconds, models_per_second.
    """
    if results.get("experiment") == "population":
        return format_population(results)
    if results.get("experiment") == "targets":
        return format_targets(results)
    r = {k: v for k, v in results.items() if v is not None}
    lines: list[str] = []

    def num(key):
        return _is_number(r.get(key))

    def rate(x) -> str:
        return _f(x) if _is_number(x) else "n/a"

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

    if "score" in r or "threshold_rule" in r:
        rule = r.get("threshold_rule", "empirical")
        lines.append(f"Score: {r.get('score', 'loss')}, threshold rule: {rule}")
    if "decision" in r:
        lines.append(f"Decision: {r['decision']}")
    bound = f" (FPR <= {r['alpha']:g})" if num("alpha") else ""
    if num("threshold"):
        scale = r.get("threshold_scale")
        on = f", on the {scale} scale" if scale and scale == "log likelihood ratio" else ""
        lines.append(f"Threshold{bound}{on}: {_f(r['threshold'])}")
    elif "threshold" in results and "decision" in r:
        lines.append(f"Threshold{bound}: none (see the warnings)")
    cal_models = ""
    if num("n_member") and num("n_nonmember"):
        cal_models = f" on {r['n_member']} IN / {r['n_nonmember']} OUT calibration models"
    if num("power"):
        lines.append(f"Power (TPR){cal_models}: {_f(r['power'])}")
    if num("calibration_fpr"):
        k = f" (k = {r['k']} allowed)" if num("k") else ""
        lines.append(f"Calibration FPR: {_f(r['calibration_fpr'])}{k}")
    elif num("fpr"):
        lines.append(f"Empirical FPR: {_f(r['fpr'])}")
    if num("expected_heldout_fpr"):
        upper = r.get("expected_heldout_fpr_upper95")
        up = f" (95% upper bound {_f(upper)})" if _is_number(upper) else ""
        lines.append(f"Expected FPR on fresh models: {_f(r['expected_heldout_fpr'])}{up}")
    if num("auc"):
        lines.append(f"AUC: {_f(r['auc'])}")
    if num("balanced_accuracy"):
        lines.append(f"Balanced accuracy: {_f(r['balanced_accuracy'])}")
    if isinstance(r.get("tpr_at_fpr"), dict):
        parts = [f"{float(f) * 100:g}%: {rate(v)}" for f, v in r["tpr_at_fpr"].items()]
        lines.append("TPR at FPR " + ", ".join(parts))
    for key, who in (("member", "member"), ("nonmember", "non-member")):
        for kind, name in (("loss", "loss"), ("score", r.get("score", "score"))):
            if num(f"{key}_{kind}_mean"):
                spread = f" ± {_f(r[f'{key}_{kind}_std'])}" if num(f"{key}_{kind}_std") else ""
                lines.append(f"Mean {name} {who}: {_f(r[f'{key}_{kind}_mean'])}{spread}")
                break
    if num("gaussian_threshold"):
        lines.append(f"Gaussian threshold: {_f(r['gaussian_threshold'])}")
    if num("gaussian_power"):
        lines.append(f"Gaussian power: {_f(r['gaussian_power'])}")

    ev = r.get("evaluation")
    if isinstance(ev, dict):
        lines.append("Evaluation (held-out models):")
        for item in ev.get("items") or []:
            where = "x in train:    " if item.get("member") else "x not in train:"
            key = "loss" if "loss" in item else "score"
            name = "loss" if key == "loss" else r.get("score", "score")
            value = _f(item[key]) if _is_number(item.get(key)) else "nan"
            lines.append(
                f"  {where}  {name}={value}  predicted member={item.get('predicted_member')}"
                f"  correct={item.get('correct')}"
            )
        level = ev.get("confidence", 0.95)
        for key, name, hits, total in (
            ("tpr", "TPR", "true_positives", "n_member"),
            ("fpr", "FPR", "false_positives", "n_nonmember"),
        ):
            if _is_number(ev.get(key)):
                ci = ev.get(f"{key}_ci")
                ci_text = f"  {level * 100:g}% CI {_ci(ci)}" if ci else ""
                count = ""
                if _is_number(ev.get(hits)) and _is_number(ev.get(total)):
                    count = f" ({ev[hits]}/{ev[total]})"
                lines.append(f"  {name}: {_f(ev[key])}{count}{ci_text}")
        if _is_number(ev.get("accuracy")):
            lines.append(f"  Accuracy: {_f(ev['accuracy'])}")

    eps = r.get("epsilon_lower_bound")
    if isinstance(eps, dict):
        level = eps.get("confidence", 0.95)
        head = f"Epsilon lower bound ({level * 100:g}% confidence, delta {eps.get('delta', 0):g})"
        if _is_number(eps.get("value")):
            extra = []
            if _is_number(eps.get("symmetric")):
                extra.append(f"symmetric {_f(eps['symmetric'])}")
            best = eps.get("max_over_calibration_thresholds")
            if isinstance(best, dict) and _is_number(best.get("value")):
                extra.append(f"best calibration threshold {_f(best['value'])}")
            tail = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"{head}: {_f(eps['value'])}{tail}")
        else:
            lines.append(f"{head}: n/a (needs evaluation models)")

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
    warnings = r.get("warnings") or []
    if warnings:
        lines.append(f"Warnings ({len(warnings)}):")
        lines.extend(f"  ! {w}" for w in warnings)
    return "\n".join(lines)
