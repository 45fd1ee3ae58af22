"""PNG plots of a single-target run: the attack's ROC, PR and histograms, the target image.

The canvas, the PNG writer and the parts these figures share with the other kinds'
come from ``jaxmia.plotting``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxmia.attack import metrics, scores, thresholds
from jaxmia.kinds.single_target.analysis import single_target_scores
from jaxmia.kinds.single_target.files import (
    FIGURES,
    HISTOGRAMS_FILE,
    PR_FILE,
    ROC_FILE,
    TARGET_FILE,
)
from jaxmia.plotting import MEMBER_COLOR as _MEMBER_COLOR
from jaxmia.plotting import NONMEMBER_COLOR as _NONMEMBER_COLOR
from jaxmia.plotting import (
    alpha_line,
    interval_point,
    log_loss_histogram,
    log_roc_axes,
    new_figure,
    on_log,
    plot_reflected_kdes,
    pr_staircase,
    save_png,
    shade_member_region,
)

__all__ = [
    "FIGURES",
    "HISTOGRAMS_FILE",
    "PR_FILE",
    "ROC_FILE",
    "TARGET_FILE",
    "plot_attack",
    "plot_target",
    "write_figures",
]

_MAX_BINS = 80


def _shared_bins(member: np.ndarray, nonmember: np.ndarray, min_bins: int = 1) -> np.ndarray:
    pooled = np.concatenate([member, nonmember])
    edges = np.histogram_bin_edges(pooled, bins="auto")
    if edges.size - 1 > _MAX_BINS:
        edges = np.histogram_bin_edges(pooled, bins=_MAX_BINS)
    elif edges.size - 1 < min_bins and np.ptp(pooled) > 0:
        edges = np.histogram_bin_edges(pooled, bins=min_bins)
    return edges


def plot_target(
    path, image_uint8_hwc, *, label_name: str, index: int, title_suffix: str = ""
) -> Path:
    """The target image at its own 32x32 resolution (nearest neighbour), with index and class.

    Args:
      path: where the PNG goes.
      image_uint8_hwc: uint8[H, W, 3] (also [H, W, 1] or [H, W] for grey).
      label_name: class name of the target.
      index: its index in the training set.
      title_suffix: put on a second title line (the figure is small).

    Returns:
      ``path`` as a Path.
    """
    img = np.asarray(image_uint8_hwc)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (3, 4))):
        raise ValueError(f"expected an image [H, W, 3] or [H, W], got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")

    fig = new_figure((3, 3))
    ax = fig.add_subplot()
    ax.imshow(
        img, interpolation="nearest", cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255
    )
    ax.set_axis_off()
    title = f"target #{index}: {label_name}"
    if title_suffix.strip():
        title += "\n" + title_suffix.strip()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


# ================================================================ the attack's figures (issue 8)

_PANEL_LABEL = {
    "loss": "cross-entropy loss of x",
    "lira": r"$\varphi = z_y - \log\sum_{y' \neq y} e^{z_{y'}}$  (logit-scaled confidence)",
    "hinge": r"hinge $= z_y - \max_{y' \neq y} z_{y'}$",
}


def _operating_point(results: dict) -> tuple[float, float, str, dict | None]:
    """(fpr, tpr, where, evaluation): realised on the evaluation models, else calibration."""
    ev = results.get("evaluation")
    if isinstance(ev, dict) and ev.get("fpr") is not None and ev.get("tpr") is not None:
        pairs = f"{ev['n_member']} IN + {ev['n_nonmember']} OUT evaluation models"
        return float(ev["fpr"]), float(ev["tpr"]), pairs, ev
    return float(results["calibration_fpr"]), float(results["power"]), "calibration models", None


def _rate_text(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _roc_figure(s_mem, s_non, results, title_suffix) -> Figure:
    fpr, tpr, _ = metrics.roc(s_mem, s_non)
    n_in, n_out = s_mem.size, s_non.size
    op_fpr, op_tpr, where, ev = _operating_point(results)
    positives = [v for v in (op_fpr, op_tpr) if v > 0]
    lo = min([1.0 / n_out, 1.0 / n_in, 0.5] + positives)

    fig = new_figure((6.4, 6))
    ax = fig.add_subplot()
    # The staircase of the deterministic rules "member iff s > u": at each FPR the best
    # TPR any threshold reaches without exceeding it (the TPR-at-FPR of the summary).
    # Rates of 0 cannot sit on log axes: they have their own place below lo, marked 0.
    x, y = on_log(fpr, lo), on_log(tpr, lo)
    label = [f"{scores.SCORES[results['score']].symbol} (AUC {results['auc']:.3f})"]
    for f, v in results.get("tpr_at_fpr", {}).items():
        label.append(f"TPR@{float(f) * 100:g}% FPR: {_rate_text(v)}")
    ax.step(x, y, where="post", color="tab:blue", lw=2, label="\n".join(label))
    log_roc_axes(ax, lo)
    alpha = results.get("alpha")
    notes = []
    if n_out < 20:
        notes.append(
            f"only {n_out} OUT models: FPRs below 1/l = {1.0 / n_out:.2g} cannot be measured"
        )
    off = alpha_line(ax, alpha, lo, f"alpha = {alpha:g} (asked)" if alpha is not None else "")
    if off:
        notes.append(off)

    text = f"{results['threshold_rule']} rule on the {where}:\nTPR {op_tpr:.3f}, FPR {op_fpr:.3f}"
    if op_fpr == 0 or op_tpr == 0:
        text += " (a 0 is drawn at the mark 0)"
    if ev is not None:
        conf = ev.get("confidence", 0.95)
        text += f"\n({conf * 100:g}% Clopper–Pearson bars)"
        interval_point(ax, op_fpr, op_tpr, ev["fpr_ci"], ev["tpr_ci"], lo=lo, label=text)
    else:
        px, py = on_log([op_fpr, op_tpr], lo)
        ax.plot([px], [py], "o", color="tab:red", label=text, clip_on=False)
    if notes:
        ax.text(
            0.03,
            0.97,
            "\n".join(notes),
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            color="tab:red",
        )
    ax.set_title(
        f"ROC, log-log ({n_in} IN / {n_out} OUT calibration models){title_suffix}", fontsize=10
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def _pr_figure(s_mem, s_non, results, title_suffix) -> Figure:
    ap = metrics.average_precision(s_mem, s_non)
    op_fpr, op_tpr, where, _ = _operating_point(results)

    fig = new_figure((6.4, 5.5))
    ax = fig.add_subplot()
    # Its drawn area is the AP of the legend (plotting.pr_staircase).
    pr_staircase(ax, s_mem, s_non, color="tab:blue", lw=2, label=f"AP {ap:.3f}")
    ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance (prevalence ½)")
    if op_tpr + op_fpr > 0:
        ax.plot(
            [op_tpr],
            [op_tpr / (op_tpr + op_fpr)],
            "o",
            color="tab:red",
            label=f"{results['threshold_rule']} rule,\n{where}",
        )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (TPR)")
    ax.set_ylabel("precision")
    ax.set_title(
        f"Precision–recall, {scores.SCORES[results['score']].symbol}{title_suffix}\n"
        "membership prevalence is ½ by construction (one IN, one OUT model per round)",
        fontsize=9,
    )
    ax.legend(loc="lower left", fontsize="small", title="precision = TPR / (TPR + FPR)")
    fig.tight_layout()
    return fig


def _histogram_panel(ax, name, mem, non, results, *, ev_mem=None, ev_non=None):
    # Member and non-member scores sit far apart: "auto" bins on the pooled sample are
    # too coarse for the narrow member peak, so ask for at least ~2 sqrt(n) of them.
    edges = _shared_bins(mem, non, min_bins=min(60, int(np.sqrt(mem.size + non.size)) * 2))
    kw = {"bins": edges, "density": True, "alpha": 0.45}
    ax.hist(mem, color=_MEMBER_COLOR, label=f"member (IN), n={mem.size}", **kw)
    ax.hist(non, color=_NONMEMBER_COLOR, label=f"non-member (OUT), n={non.size}", **kw)
    lo, hi = float(edges[0]), float(edges[-1])
    chosen = results.get("score") == name
    t = results.get("threshold") if chosen and results.get("threshold_rule") != "lira" else None
    if t is not None:
        lo, hi = min(lo, t), max(hi, t)
    # Every evaluation model's tick is shown, however far beyond the calibration range.
    ticks = [np.asarray(v, np.float64) for v in (ev_mem, ev_non) if v is not None and np.size(v)]
    ticks = np.concatenate(ticks) if ticks else np.zeros(0)
    ticks = ticks[np.isfinite(ticks)]
    if ticks.size:
        lo, hi = min(lo, float(ticks.min())), max(hi, float(ticks.max()))
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    if name == "loss":
        # Losses are >= 0: the density is a KDE reflected at 0, with no mass below it.
        plot_reflected_kdes(ax, np.linspace(0.0, hi + pad, 400), mem, non)
        ax.set_xlim(0.0, hi + pad)
    else:
        grid = np.linspace(lo - pad, hi + pad, 400)
        for values, color, who in (
            (mem, _MEMBER_COLOR, "member"),
            (non, _NONMEMBER_COLOR, "non-member"),
        ):
            fit = thresholds.fit_gaussian(values)
            if fit.std > 0 and np.ptp(values) > 0:
                pdf = np.exp(-0.5 * ((grid - fit.mean) / fit.std) ** 2) / (
                    fit.std * np.sqrt(2 * np.pi)
                )
                ax.plot(
                    grid,
                    pdf,
                    color=color,
                    lw=2,
                    label=f"N fit {who} (μ={fit.mean:.3g}, σ={fit.std:.3g})",
                )
    if chosen:
        region = results.get("member_region")
        if results.get("threshold_rule") == "lira" and region:
            shade_member_region(ax, region, "called member (likelihood ratio > cut)")
        elif t is not None:
            ax.axvline(
                t, color="black", lw=1.5, ls=":", label=results.get("decision", f"t = {t:.4g}")
            )
        for vals, color in ((ev_mem, _MEMBER_COLOR), (ev_non, _NONMEMBER_COLOR)):
            if vals is not None and np.size(vals):
                v = np.asarray(vals, dtype=np.float64)
                v = v[np.isfinite(v)]
                ax.plot(v, np.zeros_like(v), "|", color=color, ms=14, mew=1.5)
        if ev_mem is not None or ev_non is not None:
            ax.plot([], [], "|", color="black", ms=10, label="evaluation models (ticks)")
    ax.set_xlabel(_PANEL_LABEL[name])
    ax.set_ylabel("density")
    ax.legend(fontsize="x-small")


def _log_loss_panel(ax, mem, non, results, ev_mem=None, ev_non=None) -> None:
    """x's loss on a log axis: the members' pile-up near 0 that the linear panel cannot
    resolve; the threshold of a loss rule, and the evaluation models' ticks."""
    log_loss_histogram(ax, mem, non, names=("member (IN)", "non-member (OUT)"), unit="models")
    t = results.get("threshold")
    on_loss = results.get("score") == "loss" and results.get("threshold_rule") != "lira"
    if on_loss and t is not None and t > 0:
        ax.axvline(t, color="black", lw=1.5, ls=":", label=results.get("decision"))
    for vals, color in ((ev_mem, _MEMBER_COLOR), (ev_non, _NONMEMBER_COLOR)):
        if vals is not None and np.size(vals):
            v = np.asarray(vals, np.float64)
            v = v[np.isfinite(v) & (v > 0)]
            ax.plot(v, np.zeros_like(v), "|", color=color, ms=14, mew=1.5)
    ax.legend(fontsize="x-small")


def plot_attack(
    folder,
    results: dict,
    *,
    member,
    nonmember,
    eval_member=None,
    eval_nonmember=None,
    member_loss=None,
    nonmember_loss=None,
    member_phi=None,
    nonmember_phi=None,
    title_suffix: str = "",
) -> list[Path]:
    """The attack's figures: ROC_FILE (log-log), PR_FILE and HISTOGRAMS_FILE in ``folder``.

    Args:
      folder: an existing folder; the caller decides which.
      results: the dict from ``attack.summary.summarize`` (score, threshold_rule, threshold,
        decision, member_region, calibration_fpr, power, auc, tpr_at_fpr, alpha,
        evaluation are read).
      member, nonmember: float[l_in], float[l] native scores of ``results["score"]`` on
        the calibration models (the ones the summary came from).
      eval_member, eval_nonmember: float[E] native scores of the evaluation models, drawn
        as ticks on the histogram of the chosen score (optional).
      member_loss, nonmember_loss, member_phi, nonmember_phi: the loss and phi of the
        calibration models for the histogram panels (default: ``member``/``nonmember``
        when that is the chosen score; a panel without data is left out).
      title_suffix: appended to each title (" [SYNTHETIC DATA]").

    Returns:
      The paths written, [roc, pr, histograms].
    """
    folder = Path(folder)
    score = results["score"]
    mem = scores.check_scores(member, "member scores")
    non = scores.check_scores(nonmember, "non-member scores")
    s_mem, s_non = scores.to_attack(mem, score), scores.to_attack(non, score)
    written = [
        save_png(_roc_figure(s_mem, s_non, results, title_suffix), folder / ROC_FILE),
        save_png(_pr_figure(s_mem, s_non, results, title_suffix), folder / PR_FILE),
    ]

    panels = {}
    if score == "loss":
        member_loss, nonmember_loss = mem, non
    if score == "lira":
        member_phi, nonmember_phi = mem, non
    if member_loss is not None and nonmember_loss is not None:
        panels["loss"] = (member_loss, nonmember_loss)
        panels["log loss"] = (member_loss, nonmember_loss)
    if member_phi is not None and nonmember_phi is not None:
        panels["lira"] = (member_phi, nonmember_phi)
    if score == "hinge":
        panels["hinge"] = (mem, non)
    fig = new_figure((6.0 * len(panels), 4.8))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, (pm, pn)) in zip(axes, panels.items(), strict=True):
        pm = scores.check_scores(pm, f"member {name}")
        pn = scores.check_scores(pn, f"non-member {name}")
        if name == "log loss":
            loss_ticks = (eval_member, eval_nonmember) if score == "loss" else (None, None)
            _log_loss_panel(ax, pm, pn, results, *loss_ticks)
            continue
        mine = name == score
        _histogram_panel(
            ax,
            name,
            pm,
            pn,
            results,
            ev_mem=eval_member if mine else None,
            ev_non=eval_nonmember if mine else None,
        )
    fig.suptitle("x under models trained with (IN) and without (OUT) it" + title_suffix)
    fig.tight_layout()
    written.append(save_png(fig, folder / HISTOGRAMS_FILE))
    return written


def write_figures(folder, arrays: dict, results: dict, *, suffix: str) -> list[Path]:
    """Writes the run's PNG files (files.FIGURES) into ``folder``; returns their paths."""
    folder = Path(folder)
    s = single_target_scores(arrays, results["score"])
    loss = single_target_scores(arrays, "loss")
    phi = single_target_scores(arrays, "lira")
    written = plot_attack(
        folder,
        results,
        member=s["member"],
        nonmember=s["nonmember"],
        eval_member=s["eval_member"],
        eval_nonmember=s["eval_nonmember"],
        member_loss=loss["member"],
        nonmember_loss=loss["nonmember"],
        member_phi=phi["member"],
        nonmember_phi=phi["nonmember"],
        title_suffix=suffix,
    )
    written.append(
        plot_target(
            Path(folder) / TARGET_FILE,
            np.asarray(arrays["target_image"], np.uint8),
            label_name=results["target_label"],
            index=results["target_index"],
            title_suffix=suffix,
        )
    )
    return written
