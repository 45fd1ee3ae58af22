"""Console text shared by every kind's summary: number formatting, the header and the footer.

Each kind writes its own summary (kinds/<kind>/console.py) from its results.json
dict, with these helpers; ``jaxmia.kinds.format_summary`` picks the kind.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ci_text", "fmt", "footer", "header", "is_number", "mean_ci", "privacy_lines"]


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


def privacy_lines(r: dict) -> list[str]:
    """The privacy audit of a DP-SGD run as a table, from results.json's ``privacy`` block.

    One row per noise level: σ, the accountant's ε (RDP, PLD) and each empirical
    ε_lb with its ratio to the PLD ε (multi-run: Clopper-Pearson and the Gaussian-DP
    estimate; one run: the median over evaluation models and the bound that holds
    for all of them at once).  No block: no lines.  The canary, if any, comes first.
    """
    lines = []
    canary = r.get("canary")
    if isinstance(canary, dict):
        if canary.get("label") is not None:
            lines.append(
                f"Canary: {canary['kind']}: x trained as {canary['label']} "
                f"(its own class: {canary.get('original_label')})"
            )
        else:
            lines.append(
                f"Canary: {canary['kind']}: each of the {canary.get('n_targets')} "
                "targets trained with another class"
            )
    block = r.get("privacy")
    if not isinstance(block, dict):
        return lines

    def cell(x, digits=3):
        return fmt(x, digits) if is_number(x) else "n/a"

    conf = block.get("confidence", 0.95)
    clip = block.get("l2_clip")
    lines.append(
        f"Privacy audit (DP-SGD, {block.get('sampling')} sampling, C = "
        f"{'inf' if clip is None else f'{clip:g}'}, q = {cell(block.get('sampling_rate'), 4)}, "
        f"{block.get('steps')} steps, delta = {block.get('delta', 0):.3g}; "
        f"epsilon_lb at {conf * 100:g}% confidence):"
    )
    one_run = any("one_run" in (lv.get("empirical") or {}) for lv in block["levels"])
    if one_run:
        head = ("sigma", "eps RDP", "eps PLD", "one-run median", "one-run all", "ratio all")
    else:
        head = ("sigma", "eps RDP", "eps PLD", "CP eps_lb", "GDP eps_lb", "ratio CP", "ratio GDP")
    rows = [head]
    for lv in block["levels"]:
        eps, emp = lv["epsilon"], lv.get("empirical") or {}
        row = [f"{lv['noise_multiplier']:g}", cell(eps.get("rdp")), cell(eps.get("pld"))]
        if one_run:
            one = emp.get("one_run") or {}
            row += [
                cell(one.get("median")),
                cell(one.get("max_simultaneous")),
                cell(one.get("ratio_max_simultaneous")),
            ]
        else:
            cp, gdp = emp.get("clopper_pearson") or {}, emp.get("gaussian_dp") or {}
            row += [
                cell(cp.get("epsilon_lb")),
                cell(gdp.get("epsilon_lb")),
                cell(cp.get("ratio")),
                cell(gdp.get("ratio")),
            ]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return lines
