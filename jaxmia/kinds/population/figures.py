"""PNG figures of the population attack: loss histograms, all R ROC curves, precision-recall.

The canvas, the PNG writer and the parts shared with the other kinds' figures come
from ``jaxmia.plotting``. The callers pass attack statistics (high = member, see
``jaxmia.attack``) and the dict of ``analysis.population_results``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jaxmia import plotting
from jaxmia.attack import metrics, scores
from jaxmia.kinds.population.analysis import population_scores
from jaxmia.kinds.population.files import FIGURES, HISTOGRAMS_FILE, PR_FILE, ROC_FILE

__all__ = [
    "FIGURES",
    "HISTOGRAMS_FILE",
    "PR_FILE",
    "ROC_FILE",
    "histograms_figure",
    "plot_histograms",
    "plot_pr",
    "plot_roc",
    "pr_figure",
    "roc_figure",
    "write_figures",
]


_CURVE_COLOR = "tab:blue"
_YEOM_COLOR = "tab:red"
_ALPHA_COLOR = "black"


def _ci_text(entry: dict, digits: int = 3) -> str:
    if entry.get("mean") is None:
        return "n/a"
    text = f"{entry['mean']:.{digits}f}"
    if entry.get("ci") is not None:
        lo, hi = entry["ci"]
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def _rule_label(results: dict, rep: dict) -> str:
    a = rep["alpha_rule"]
    return (
        f"{a['rule']} rule at alpha={results['alpha']:g}: {a['decision']}\n"
        f"   (TPR {a['tpr']:.3f}, FPR {a['fpr']:.3f})"
    )


def _yeom_label(rep: dict) -> str:
    y = rep["yeom"]
    return f"Yeom: {y['decision']}\n   (TPR {y['tpr']:.3f}, FPR {y['fpr']:.3f})"


def _loss_panels(ax_lin, ax_log, results, rep, mem, non, draw_alpha):
    """Loss histograms of one model, linear (with reflected KDEs) and on a log axis."""
    yeom_t = rep["yeom"]["threshold"]
    alpha_t = rep["alpha_rule"]["threshold"] if draw_alpha else None
    # The linear axis stops at the 99th percentile of the pooled losses (and the
    # thresholds), so a few huge non-member losses do not squash the rest; the
    # histograms stay normalised to all n points, so what lies beyond is missing mass.
    pooled = np.concatenate([mem, non])
    marks = [v for v in (yeom_t, alpha_t) if v is not None]
    cut = float(max([np.quantile(pooled, 0.99), *marks]))
    cut = cut if cut > 0 else 1.0
    edges = np.linspace(0.0, cut, 61)
    beyond = int(np.count_nonzero(pooled > cut))
    for values, color, who in (
        (mem, plotting.MEMBER_COLOR, "member"),
        (non, plotting.NONMEMBER_COLOR, "non-member"),
    ):
        ax_lin.hist(
            values,
            bins=edges,
            weights=np.full(values.size, 1.0 / (values.size * (cut / 60))),
            alpha=0.45,
            color=color,
            label=f"{who}s, n={values.size}",
        )
    # Losses are >= 0: the densities are KDEs reflected at 0, with no mass below it.
    grid = np.linspace(0.0, edges[-1], 600)
    plotting.plot_reflected_kdes(ax_lin, grid, mem, non, names=("members", "non-members"))
    ax_lin.set_xlim(0.0, edges[-1])
    ax_lin.set_xlabel("cross-entropy loss")
    ax_lin.set_ylabel("density")
    title = "linear axis"
    if beyond:
        title += f" ({beyond} losses above {cut:.3g} not shown)"
    ax_lin.set_title(title, fontsize=10)

    # Log axis: members pile up near 0, where the linear axis cannot resolve them.
    plotting.log_loss_histogram(ax_log, mem, non)

    for ax in (ax_lin, ax_log):
        if yeom_t is not None and (ax is ax_lin or yeom_t > 0):
            ax.axvline(
                yeom_t,
                color=_YEOM_COLOR,
                lw=1.5,
                ls="-",
                label=_yeom_label(rep) if ax is ax_lin else None,
            )
        if alpha_t is not None and (ax is ax_lin or alpha_t > 0):
            ax.axvline(
                alpha_t,
                color=_ALPHA_COLOR,
                lw=1.5,
                ls=":",
                label=_rule_label(results, rep) if ax is ax_lin else None,
            )
    ax_lin.legend(fontsize="x-small")
    ax_log.legend(fontsize="x-small")


def _score_panel(ax, results, rep, mem, non):
    """Histogram of the chosen score (lira or hinge) with the alpha rule on it."""
    score = results["score"]
    a = rep["alpha_rule"]
    pooled = np.concatenate([mem, non])
    lo, hi = (float(v) for v in np.quantile(pooled, [0.005, 0.995]))
    if a["threshold"] is not None and a["rule"] != "lira":
        lo, hi = min(lo, a["threshold"]), max(hi, a["threshold"])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, 61)
    width = (hi - lo) / 60
    outside = int(np.count_nonzero((pooled < lo) | (pooled > hi)))
    for values, color, who in (
        (mem, plotting.MEMBER_COLOR, "member"),
        (non, plotting.NONMEMBER_COLOR, "non-member"),
    ):
        ax.hist(
            values,
            bins=edges,
            weights=np.full(values.size, 1.0 / (values.size * width)),
            alpha=0.45,
            color=color,
            label=f"{who}s, n={values.size}",
        )
    ax.set_xlim(lo, hi)
    a = rep["alpha_rule"]
    region = a.get("member_region")
    if a["rule"] == "lira" and region:
        plotting.shade_member_region(ax, region, _rule_label(results, rep))
    elif a["threshold"] is not None:
        ax.axvline(
            a["threshold"], color=_ALPHA_COLOR, lw=1.5, ls=":", label=_rule_label(results, rep)
        )
    ax.set_xlabel(scores.SCORES[score].axis_label)
    ax.set_ylabel("density")
    title = f"the attack's score: {score}"
    if outside:
        title += f" ({outside} values outside the axis)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize="x-small")


def histograms_figure(
    results: dict, rep: dict, member_loss, nonmember_loss, chosen=None, *, title_suffix=""
) -> Figure:
    """Member vs non-member losses of ONE target model (``rep``), with both thresholds.

    Args:
      results: ``population_results``'s dict (alpha, score, repetitions are read).
      rep: its per-repetition entry of the model drawn.
      member_loss, nonmember_loss: float[n], that model's losses.
      chosen: (member, non-member) native values of the chosen score when it is not the
        loss: drawn in a third panel with the alpha rule (which then is not on the loss).
      title_suffix: appended to the title.
    """
    mem = scores.check_scores(member_loss, "member losses")
    non = scores.check_scores(nonmember_loss, "non-member losses")
    panels = 2 if chosen is None else 3
    fig = plotting.new_figure((6.2 * panels, 5.2))
    axes = fig.subplots(1, panels)
    _loss_panels(axes[0], axes[1], results, rep, mem, non, draw_alpha=chosen is None)
    if chosen is not None:
        _score_panel(axes[2], results, rep, np.asarray(chosen[0]), np.asarray(chosen[1]))
    r, total = rep["repetition"], results["repetitions"]
    fig.suptitle(
        f"Losses under target model {r} (repetition {r} of R = {total}; one model, not pooled):"
        f" its {mem.size} training points vs {non.size} unseen ones{title_suffix}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def roc_figure(results: dict, curves, *, title_suffix="") -> Figure:
    """Log-log ROC curves of every used target model (LiRA style), axes from 1/n to 1.

    Args:
      results: ``population_results``'s dict.
      curves: [(member_stat float[n], nonmember_stat float[n])] per used repetition, in
        the order of ``results["per_repetition"]``; high statistic = member.
    """
    n = results["n_nonmember"]
    lo = 1.0 / max(n, results["n_member"])
    summ = results["summary"]
    fig = plotting.new_figure((7, 6.4))
    ax = fig.add_subplot()
    many = len(curves) > 1
    for i, (s_mem, s_non) in enumerate(curves):
        fpr, tpr, _ = metrics.roc(s_mem, s_non)
        label = None
        if i == 0:
            label = f"{len(curves)} target models (one curve each)" if many else "1 target model"
            dropped = len(results.get("repetitions_left_out", []))
            if dropped:
                label += f"\n({dropped} more left out: non-finite losses)"
            label += f"\nAUC {'mean ' if many else ''}{_ci_text(summ['auc'])}"
            for f, entry in summ["tpr_at_fpr"].items():
                text = _ci_text(entry)
                if entry["mean"] is None:
                    text += f" (needs n >= {round(1 / float(f))})"
                label += f"\nTPR@{float(f) * 100:g}% FPR: {text}"
        ax.step(
            plotting.on_log(fpr, lo),
            plotting.on_log(tpr, lo),
            where="post",
            color=_CURVE_COLOR,
            lw=1.0,
            alpha=0.55 if many else 1.0,
            label=label,
        )
    plotting.log_roc_axes(ax, lo, xlabel="false positive rate (rates of 0 at the mark 0)")
    per = results["per_repetition"]
    ax.plot(
        plotting.on_log([p["yeom"]["fpr"] for p in per], lo),
        plotting.on_log([p["yeom"]["tpr"] for p in per], lo),
        "o",
        color=_YEOM_COLOR,
        ms=4,
        clip_on=False,
        label=f"Yeom rule (on the loss), per model\n(TPR {_ci_text(summ['yeom']['tpr'])})",
    )
    ax.plot(
        plotting.on_log([p["alpha_rule"]["fpr"] for p in per], lo),
        plotting.on_log([p["alpha_rule"]["tpr"] for p in per], lo),
        "x",
        color=_ALPHA_COLOR,
        ms=5,
        clip_on=False,
        label=f"{results['threshold_rule']} rule at alpha={results['alpha']:g}, per model",
    )
    ax.set_title(
        f"ROC of {scores.SCORES[results['score']].symbol} per target model, log-log{title_suffix}\n"
        f"{n} members / {n} non-members each"
        + (
            f"; [brackets]: {results['confidence'] * 100:g}% t-interval of the mean over models"
            if many
            else ""
        ),
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize="x-small")
    fig.tight_layout()
    return fig


def pr_figure(results: dict, curves, *, title_suffix="") -> Figure:
    """Precision-recall curves of every used target model; prevalence ½ by construction.

    Arguments as ``roc_figure``. Each model has n members and n non-members, so precision
    is TPR / (TPR + FPR) and chance is ½.
    """
    summ = results["summary"]
    fig = plotting.new_figure((7, 5.8))
    ax = fig.add_subplot()
    many = len(curves) > 1
    for i, (s_mem, s_non) in enumerate(curves):
        label = None
        if i == 0:
            label = (
                f"{len(curves)} target model{'s' if many else ''}: average precision "
                f"{'mean ' if many else ''}{_ci_text(summ['average_precision'])}"
            )
        # Each staircase's drawn area is that model's average precision.
        plotting.pr_staircase(
            ax,
            s_mem,
            s_non,
            color=_CURVE_COLOR,
            lw=1.0,
            alpha=0.55 if many else 1.0,
            label=label,
        )
    ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance (prevalence ½)")
    per = results["per_repetition"]
    yeom = [
        (p["yeom"]["tpr"], p["yeom"]["fpr"]) for p in per if p["yeom"]["tpr"] + p["yeom"]["fpr"]
    ]
    ax.plot(
        [t for t, _ in yeom],
        [t / (t + f) for t, f in yeom],
        "o",
        color=_YEOM_COLOR,
        ms=4,
        label="Yeom rule (on the loss), per model",
    )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (TPR)")
    ax.set_ylabel("precision")
    n = results["n_member"]
    ax.set_title(
        f"Precision–recall of {scores.SCORES[results['score']].symbol} per target model"
        f"{title_suffix}\n"
        f"membership prevalence is ½ by construction ({n} members, {n} non-members per model)",
        fontsize=9,
    )
    ax.legend(loc="lower left", fontsize="small", title="precision = TP / (TP + FP)")
    fig.tight_layout()
    return fig


def plot_histograms(path, *args, **kw) -> Path:
    """``histograms_figure(*args, **kw)`` written to ``path``."""
    return plotting.save_png(histograms_figure(*args, **kw), path)


def plot_roc(path, *args, **kw) -> Path:
    """``roc_figure(*args, **kw)`` written to ``path``."""
    return plotting.save_png(roc_figure(*args, **kw), path)


def plot_pr(path, *args, **kw) -> Path:
    """``pr_figure(*args, **kw)`` written to ``path``."""
    return plotting.save_png(pr_figure(*args, **kw), path)


def write_figures(folder, arrays, results: dict, *, suffix: str = "") -> list[Path]:
    """Writes HISTOGRAMS_FILE, ROC_FILE and PR_FILE into ``folder``; returns their paths.

    ``results`` is ``population_results(arrays, ...)``; ``suffix`` is appended to every
    title (" [SYNTHETIC DATA]" for synthetic runs).
    """
    folder = Path(folder)
    score = results["score"]
    curves = []
    for rep in results["per_repetition"]:
        mem, non = population_scores(arrays, score, rep["repetition"])
        curves.append((scores.to_attack(mem, score), scores.to_attack(non, score)))
    first = results["per_repetition"][0]
    r0 = first["repetition"]
    loss_m, loss_n = population_scores(arrays, "loss", r0)
    chosen = None if score == "loss" else population_scores(arrays, score, r0)
    return [
        plot_histograms(
            folder / HISTOGRAMS_FILE, results, first, loss_m, loss_n, chosen, title_suffix=suffix
        ),
        plot_roc(folder / ROC_FILE, results, curves, title_suffix=suffix),
        plot_pr(folder / PR_FILE, results, curves, title_suffix=suffix),
    ]
