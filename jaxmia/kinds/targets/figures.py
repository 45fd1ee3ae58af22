"""PNG figures of a many-targets run: per-target vulnerability and the pooled ROC.

The canvas, the PNG writer, the ROC axes and the interval point come from
``jaxmia.plotting``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from jaxmia.attack import scores
from jaxmia.audit_figures import write_privacy_audit
from jaxmia.kinds.targets.analysis import check_targets_arrays, extremes, pooled_roc
from jaxmia.kinds.targets.files import FIGURES, ROC_FILE, VULNERABILITY_FILE
from jaxmia.plotting import interval_point, log_roc_axes, new_figure, save_png

__all__ = [
    "FIGURES",
    "ROC_FILE",
    "VULNERABILITY_FILE",
    "plot_targets_roc",
    "plot_vulnerability",
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
            f"{r['label']}\n#{r['index']}  AUC {r['auc']:.3f}\npower {r['power']:.2f}", fontsize=8
        )
    subfig.suptitle(title, fontsize=11, fontweight="bold", y=0.995, va="top")


def plot_vulnerability(path, rows: list[dict], images, results: dict, *, title_suffix="") -> Path:
    """The distribution of per-target AUC, and the most and least vulnerable targets.

    Args:
      path: where the PNG goes.
      rows: the per-target rows of ``analysis.targets_results`` (auc, power,
        index, label; auc None: a target without statistics, left out).
      images: uint8[T, 32, 32, 3], in the order of ``rows``.
      results: its summary (alpha, score, threshold_rule, auc_median, auc_q1, auc_q3,
        n_power_at_least_half, members_per_target, nonmembers_per_target).
      title_suffix: appended to the titles (" [SYNTHETIC DATA]").
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
    fig = new_figure((13, sum(heights)))
    top, *subs = np.atleast_1d(fig.subfigures(len(heights), 1, height_ratios=heights, hspace=0))

    ax = top.subplots()
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
        fontsize=12,
    )
    ax.legend(loc="upper left", fontsize=9)
    top.subplots_adjust(left=0.07, right=0.97, top=0.9, bottom=0.15)

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
    return save_png(fig, path)


def plot_targets_roc(path, roc: dict, results: dict, *, title_suffix="") -> Path:
    """Log-log ROC pooled over targets: each target its own threshold (mean TPR at each FPR)
    and one threshold for all; the realised evaluation point with its intervals.

    Args:
      roc: ``analysis.pooled_roc``; results: the run's summary.
    """
    lo = float(roc["fpr"][0])
    fig = new_figure((6.6, 6.2))
    ax = fig.add_subplot()
    sym = scores.SCORES[results["score"]].symbol
    ax.step(
        roc["fpr"],
        np.maximum(roc["own_tpr"], lo),
        where="post",
        color="tab:blue",
        lw=2,
        label=f"each target its own threshold\n(mean TPR at FPR ≤ f; median AUC "
        f"{results['auc_median']:.3f})",
    )
    if roc["global_fpr"].size:
        ax.step(
            np.maximum(roc["global_fpr"], lo),
            np.maximum(roc["global_tpr"], lo),
            where="post",
            color="tab:green",
            lw=1.5,
            label=f"one {sym} threshold for all targets",
        )
    log_roc_axes(ax, lo)
    alpha = results["alpha"]
    ax.axvline(alpha, color="gray", ls=":", lw=1, label=f"alpha = {alpha:g}")
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
            f"({ev['confidence'] * 100:g}% Clopper–Pearson)",
        )
    n_out = roc["min_nonmember"]
    ax.text(
        0.03,
        0.97,
        f"per target ≥ {n_out} OUT models: FPRs below 1/{n_out} = {1 / max(n_out, 1):.2g}\n"
        "are not resolved for a single target's own threshold",
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


def write_figures(folder, arrays, results: dict, *, rows: list[dict], suffix: str) -> list[Path]:
    """Writes vulnerability.png and targets_roc.png into ``folder``; returns their paths."""
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
    return written + write_privacy_audit(folder, results, suffix=suffix)
