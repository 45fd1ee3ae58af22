"""Console text shared by every kind's summary: number formatting, the header and the footer.

Each kind writes its own summary (kinds/<kind>/console.py) from its results.json
dict, with these helpers; ``jaxmia.kinds.format_summary`` picks the kind.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ci_text", "fmt", "footer", "header", "is_number", "mean_ci"]


def is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def fmt(x, digits: int = 4) -> str:
    """A number to ``digits`` decimals; NaN and inf spelled out."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def ci_text(ci) -> str:
    lo, hi = ci
    return f"[{fmt(lo)}, {fmt(hi)}]"


def header(r: dict) -> list[str]:
    lines = []
    if r.get("synthetic"):
        lines.append(
            "[SYNTHETIC DATA] synthetic images, not a real data set: numbers are not CIFAR"
        )
    if r.get("unverified"):
        lines.append(
            "[UNVERIFIED DATA] the data was not checked against the official checksums "
            f"(JAXMIA_UNVERIFIED_DATA=1; fingerprint {r.get('data_fingerprint')})"
        )
    if "dataset" in r:
        marks = (" [SYNTHETIC DATA]" if r.get("synthetic") else "") + (
            " [UNVERIFIED DATA]" if r.get("unverified") else ""
        )
        lines.append(f"Dataset: {r['dataset']}{marks}")
    return lines


def footer(r: dict) -> list[str]:
    lines = []
    timing = []
    if is_number(r.get("compile_seconds")):
        timing.append(f"compile {r['compile_seconds']:.1f} s")
    if is_number(r.get("train_seconds")):
        timing.append(f"training {r['train_seconds']:.1f} s")
    if is_number(r.get("models_per_second")):
        timing.append(f"{r['models_per_second']:.2f} models/s")
    if timing:
        lines.append("Time: " + ", ".join(timing))
    warnings = r.get("warnings") or []
    if warnings:
        lines.append(f"Warnings ({len(warnings)}):")
        lines.extend(f"  ! {w}" for w in warnings)
    return lines


def mean_ci(entry) -> str:
    if not isinstance(entry, dict) or not is_number(entry.get("mean")):
        return "n/a"
    text = fmt(entry["mean"])
    if entry.get("ci"):
        text += f"  95% CI {ci_text(entry['ci'])}"
    return text
