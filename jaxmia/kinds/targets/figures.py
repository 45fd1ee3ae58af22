"""PNG figures of a many-targets run: per-target vulnerability and the pooled ROC.

The canvas, the PNG writer, the ROC axes and the interval point come from
``jaxmia.plotting``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.ticker import MaxNLocator

from jaxmia.attack import scores
from jaxmia.kinds.targets.analysis import check_targets_arrays, extremes, pooled_roc
from jaxmia.kinds.targets.attack_figures import write_attack_figures
from jaxmia.kinds.targets.files import FIGURES, ROC_FILE, VULNERABILITY_FILE
from jaxmia.plotting import (
    alpha_line,
    interval_point,
    log_roc_axes,
    new_figure,
    on_log,
    save_png,
)

__all__ = [
    "FIGURES",
    "ROC_FILE",
    "VULNERABILITY_FILE",
    "plot_targets_roc",
    "plot_vulnerability",
    "vulnerability_figure",
    "write_figures",
]

_GRID_COLUMNS = 8
_ROW_INCHES = 2.05  # one row of images with its three caption lines
_TITLE_INCHES = 0.95  # the grid's title and its first row's captions


def _vulnerable(n: int, which: str) -> str:
    return f"The {which} vulnerable target" if n == 1 else f"The {n} {which} vulnerable targets"


def _grid_rows(positions: list[int]) -> int:
    return max(1, -(-len(positions) // _GRID_COLUMNS))


def _image_grid(subfig, title: str, rows: list[dict], positions: list[int], images) -> None:
    n_cols = _GRID_COLUMNS
    n_rows = _grid_rows(positions)
    axes = np.atleast_1d(subfig.subplots(n_rows, n_cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, positions, strict=False):
        img = np.asarray(images[i])
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, interpolation="nearest", cmap="gray" if img.ndim == 2 else None)
        r = rows[i]
        ax.set_title(
            f"{r['label']}  #{r['index']}\nAUC {r['auc']:.2f} [{r['auc_ci_low']:.2f}, "
            f"{r['auc_ci_high']:.2f}]\npower {r['power']:.2f}",
            fontsize=8,
        )
    subfig.suptitle(title, fontsize=11, fontweight="bold", y=0.995, va="top")


def _ranked_panel(ax, rows: list[dict], results: dict) -> None:
    """Every target's AUC with its interval, ranked from the most vulnerable down."""
    have = sorted((r for r in rows if r.get("auc") is not None), key=lambda r: -r["auc"])
    x = np.arange(1, len(have) + 1)
    auc = np.array([r["auc"] for r in have])
    lo = np.array([r["auc_ci_low"] for r in have])
    hi = np.array([r["auc_ci_high"] for r in have])
    level = results.get("confidence", 0.95) * 100
    bars = LineCollection(
        [[(i, a), (i, b)] for i, a, b in zip(x, lo, hi, strict=True)],
        colors="tab:blue",
        linewidths=max(0.4, min(2.0, 120 / max(len(have), 1))),
        alpha=0.45,
        label="auc_intervals",
    )
    ax.add_collection(bars)
    ax.plot(x, auc, "o", color="tab:blue", ms=max(1.0, min(4.0, 200 / max(len(have), 1))))
    ax.axhline(0.5, color="gray", ls="--", lw=1.2)
    ax.set_xlim(0.5, len(have) + 0.5)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("targets, most vulnerable first (rank by AUC)")
    ax.set_ylabel("AUC")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.plot([], [], "-", color="tab:blue", alpha=0.6, label=f"{level:g}% interval of the AUC")
    ax.plot([], [], "--", color="gray", label="chance (0.5)")
    handles = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.set_title(
        "Each target's AUC and its interval: a ranking is only as sure as its intervals",
        fontsize=10,
    )


def plot_vulnerability(path, rows: list[dict], images, results: dict, *, title_suffix="") -> Path:
    """``vulnerability_figure`` written to ``path`` (a PNG)."""
    return save_png(vulnerability_figure(rows, images, results, title_suffix=title_suffix), path)


def vulnerability_figure(rows: list[dict], images, results: dict, *, title_suffix=""):
    """The distribution of per-target AUC, every AUC with its interval, ranked, and the most
    and least vulnerable targets.

    Args:
      rows: the per-target rows of ``analysis.targets_results`` (auc, auc_ci_low,
        auc_ci_high, power, index, label; auc None: a target without statistics, left out).
      images: uint8[T, 32, 32, 3], in the order of ``rows``.
      results: its summary (alpha, confidence, score, threshold_rule, auc_median, auc_q1,
        auc_q3, n_power_at_least_half, members_per_target, nonmembers_per_target).
      title_suffix: appended to the titles (" [SYNTHETIC DATA]").

    Returns:
      The matplotlib Figure.
    """

    most, least = extremes(rows)
    auc = np.array([r["auc"] for r in rows if r.get("auc") is not None], np.float64)
    grids = [
        (
            positions,
            f"{_vulnerable(len(positions), which)} ({order}; power at alpha "
            f"{results['alpha']:g}){title_suffix}",
        )
        for positions, which, order in (
            (most, "most", "highest AUC"),
            (least, "least", "lowest AUC"),
        )
        if positions
    ]
    # Heights in inches: the histogram, then each grid's rows of images and its title.
    heights = [4.6] + [(_grid_rows(p) - 1) * _ROW_INCHES + 1.6 + _TITLE_INCHES for p, _ in grids]
    fig = new_figure((15, sum(heights)))
    top, *subs = np.atleast_1d(fig.subfigures(len(heights), 1, height_ratios=heights, hspace=0))

    ax, ranked = top.subplots(1, 2, width_ratios=[1.0, 1.2])
    _ranked_panel(ranked, rows, results)
    if auc.size:
        lo = max(0.0, min(0.4, float(auc.min()) - 0.02))
        edges = np.linspace(lo, 1.0, min(60, max(10, 3 * int(np.sqrt(auc.size)))) + 1)
        ax.hist(auc, bins=edges, color="tab:blue", alpha=0.75, edgecolor="white", lw=0.3)
        med, q1, q3 = results["auc_median"], results["auc_q1"], results["auc_q3"]
        ax.axvspan(q1, q3, color="tab:red", alpha=0.08, label=f"quartiles {q1:.3f} – {q3:.3f}")
        ax.axvline(med, color="tab:red", lw=2, label=f"median AUC {med:.3f}")
        ax.axvline(0.5, color="gray", ls="--", lw=1.5, label="chance (0.5)")
        ax.set_xlim(edges[0], 1.0)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the bars
    n = auc.size
    strong = results.get("n_power_at_least_half", 0)
    alpha = results["alpha"]
    ax.plot([], [], " ", label=f"power ≥ 0.5 at alpha {alpha:g}: {strong} of {n} targets")
    ins, outs = results["members_per_target"], results["nonmembers_per_target"]
    per = (
        f"{ins[0]} IN / {outs[0]} OUT"
        if ins[0] == ins[1] and outs[0] == outs[1]
        else f"{ins[0]}–{ins[1]} IN / {outs[0]}–{outs[1]} OUT"
    )
    ax.set_xlabel(f"AUC of the {scores.SCORES[results['score']].symbol} score, per target")
    ax.set_ylabel("targets")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(
        f"Per-target AUC over {n} target{'s' if n != 1 else ''} ({per} calibration models "
        f"each){title_suffix}",
        fontsize=11,
    )
    ax.legend(loc="upper left", fontsize=9)
    top.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.15, wspace=0.18)

    for sub, (positions, title) in zip(subs, grids, strict=True):
        _image_grid(sub, title, rows, positions, images)
    for sub, h in zip(subs, heights[1:], strict=True):
        sub.subplots_adjust(
            left=0.02,
            right=0.98,
            top=1 - _TITLE_INCHES / h,
            bottom=0.1 / h,
            hspace=0.35,
            wspace=0.1,
        )
    return fig


def plot_targets_roc(path, roc: dict, results: dict, *, title_suffix="") -> Path:
    """Log-log ROC pooled over targets: each target its own threshold (the mean TPR of the
    cuts whose expected held-out FPR is at most f, at f) and one threshold for all (the ROC
    of every calibration score at once); the realised evaluation point with its intervals.

    Args:
      roc: ``analysis.pooled_roc``; results: the run's summary.
    """
    lo = float(roc["lo"])
    fig = new_figure((6.6, 6.2))
    ax = fig.add_subplot()
    sym = scores.SCORES[results["score"]].symbol
    ax.step(
        on_log(roc["fpr"], lo),
        on_log(roc["own_tpr"], lo),
        where="post",
        color="tab:blue",
        lw=2,
        label="each target its own threshold (mean TPR; each cut at its\nexpected held-out "
        f"FPR (k+1)/(l+1), median AUC {results['auc_median']:.3f})",
    )
    if roc["global_fpr"].size:
        ax.step(
            on_log(roc["global_fpr"], lo),
            on_log(roc["global_tpr"], lo),
            where="post",
            color="tab:green",
            lw=1.5,
            label=f"one {sym} threshold for all targets\n(ROC of the calibration models)",
        )
    log_roc_axes(ax, lo)
    alpha = results["alpha"]
    off = alpha_line(ax, alpha, lo, f"alpha = {alpha:g}")
    ev = results.get("evaluation")
    if ev and ev.get("fpr") is not None and ev.get("tpr") is not None:
        interval_point(
            ax,
            ev["fpr"],
            ev["tpr"],
            ev["fpr_ci"],
            ev["tpr_ci"],
            lo=lo,
            label=f"{results['threshold_rule']} rule on {results['eval_models_used']} "
            f"evaluation models:\nTPR {ev['tpr']:.3f}, FPR {ev['fpr']:.3f} "
            f"({ev['confidence'] * 100:g}% intervals over the models)",
        )
    n_out = roc["min_nonmember"]
    ax.text(
        0.03,
        0.97,
        f"per target ≥ {n_out} OUT models: no cut of a target's own has an expected\n"
        f"held-out FPR below 1/({n_out}+1) = {1 / (n_out + 1):.2g}" + (f"\n{off}" if off else ""),
        transform=ax.transAxes,
        va="top",
        fontsize=8,
        color="dimgray",
    )
    ax.set_title(
        f"ROC over {results['n_targets_with_statistics']} targets, log-log (calibration "
        f"models){title_suffix}",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def write_figures(
    folder, arrays, results: dict, *, rows: list[dict], suffix: str, attacks: dict | None = None
) -> list[Path]:
    """Writes vulnerability.png and targets_roc.png into ``folder``, and with ``attacks``
    (attacks.py's drawing) attacks_roc.png and reference_curve.png; returns their paths."""
    folder = Path(folder)
    a = check_targets_arrays(arrays)
    written = []
    if "target_images" in a:
        written.append(
            plot_vulnerability(
                folder / VULNERABILITY_FILE,
                rows,
                a["target_images"],
                results,
                title_suffix=suffix,
            )
        )
    if results.get("n_targets_with_statistics"):
        written.append(
            plot_targets_roc(
                folder / ROC_FILE,
                pooled_roc(a, results["score"]),
                results,
                title_suffix=suffix,
            )
        )
    if attacks is not None:
        written += write_attack_figures(folder, attacks, results, suffix=suffix)
    return written
