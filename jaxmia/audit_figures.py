"""``privacy_audit.png``: the empirical ε_lb of a DP-SGD run against the accountant's ε.

One point per noise level and method, at x = the accountant's ε (PLD) and
y = the empirical lower bound, with the diagonal y = x: a sound audit stays
on or below it, and the closer it comes the tighter the accountant (or the
stronger the attack).  A level without noise has no finite ε and is drawn at
the right edge, marked ∞.  The multi-run bounds (single target) are one point
each; the one-run bounds (many targets) are one small dot per evaluation
model, their median and the bound that holds for all models at once.

matplotlib only through plotting.py's canvas; the numbers come from
results.json's ``privacy`` block alone.
"""

from __future__ import annotations

from pathlib import Path

from jaxmia.plotting import new_figure, save_png
from jaxmia.privacy import AUDIT_FIGURE

__all__ = ["AUDIT_FIGURE", "plot_privacy_audit", "write_privacy_audit"]

_METHODS = (  # (key in a level's "empirical", label, marker, size): a hollow ring around
    # a smaller square, so that two equal bounds stay both visible
    ("clopper_pearson", "Clopper-Pearson (multi-run)", "o", 13),
    ("gaussian_dp", "Gaussian DP estimate (Nasr et al. 2023)", "s", 6),
)


def _x(level: dict, right: float) -> float:
    eps = level["epsilon"]["pld"]
    return right if eps is None else eps


def plot_privacy_audit(path, block: dict, *, title_suffix: str = "") -> Path:
    """Draws results.json's ``privacy`` block (one run's levels) into ``path``; returns it."""
    levels = block["levels"]
    finite = [lv["epsilon"]["pld"] for lv in levels if lv["epsilon"]["pld"] is not None]
    lbs = []
    for lv in levels:
        emp = lv.get("empirical") or {}
        for key, *_ in _METHODS:
            if (emp.get(key) or {}).get("epsilon_lb") is not None:
                lbs.append(emp[key]["epsilon_lb"])
        one = emp.get("one_run")
        if one:
            lbs += [p["epsilon_lb"] for p in one["per_model"]]
    top = max(finite + lbs + [1.0])
    right = 1.15 * top
    fig = new_figure((6.4, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, right], [0, right], color="0.6", ls="--", lw=1, label="ε_lb = ε (diagonal)")
    conf = block.get("confidence", 0.95)
    drawn = set()

    def mark(key, label, xs, ys, *fmt, **style):
        # Each kind of mark is named in the legend once, however many levels draw it.
        ax.plot(xs, ys, *fmt, label=label if key not in drawn else None, **style)
        drawn.add(key)

    for lv in levels:
        x = _x(lv, right)
        emp = lv.get("empirical") or {}
        for i, (key, label, marker, size) in enumerate(_METHODS):
            e = (emp.get(key) or {}).get("epsilon_lb")
            if e is None:
                continue
            mark(
                key,
                label,
                x,
                e,
                marker=marker,
                ls="none",
                ms=size,
                mfc="none" if i == 0 else f"C{i}",
                mew=2,
                color=f"C{i}",
            )
        one = emp.get("one_run")
        if one:
            values = [p["epsilon_lb"] for p in one["per_model"]]
            mark(
                "each",
                "one run, each evaluation model",
                [x] * len(values),
                values,
                ".",
                color="C2",
                alpha=0.4,
            )
            mark("median", "one run, median over models", x, one["median"], "D", color="C2", ms=8)
            mark(
                "max",
                "one run, all models at once",
                x,
                one["max_simultaneous"],
                "*",
                color="C3",
                ms=12,
            )
        ax.annotate(
            f"σ={lv['noise_multiplier']:g}",
            (x, 0),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
            color="0.3",
        )
    if any(lv["epsilon"]["pld"] is None for lv in levels):
        ax.annotate(
            "∞ (no noise)",
            (right, 0),
            textcoords="offset points",
            xytext=(-4, 18),
            ha="right",
            fontsize=8,
            color="0.3",
        )
    ax.set_xlim(0, right * 1.02)
    ax.set_ylim(0, right * 1.02)
    ax.set_xlabel(f"accountant's ε (PLD) at δ = {block['delta']:.3g}")
    ax.set_ylabel(f"empirical ε lower bound ({100 * conf:g}% confidence)")
    ax.set_title(
        f"Privacy audit: {block['sampling']} sampling, C = {block['l2_clip']}" + title_suffix,
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, Path(path))


def write_privacy_audit(folder, results: dict, *, suffix: str) -> list[Path]:
    """``privacy_audit.png`` in ``folder`` when results.json has a ``privacy`` block; its path."""
    block = results.get("privacy")
    if not block:
        return []
    return [plot_privacy_audit(Path(folder) / AUDIT_FIGURE, block, title_suffix=suffix)]
