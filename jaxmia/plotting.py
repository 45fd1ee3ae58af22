"""The figure helpers every jaxmia plot module shares, each written only here.

``plots`` (one target), ``plots_targets`` (many targets) and ``plots_population``
(the population attack) draw different figures from the same parts: a canvas and
an atomic PNG writer, the member/non-member colours, log-log ROC axes, a realised
operating point with its confidence intervals, a loss density with no mass below
0, and the shading of the scores a likelihood-ratio rule calls members. They live
in this module and nowhere else, so the three kinds of run draw them alike and a
fix lands in all of them at once.

Figures are built on ``matplotlib.figure.Figure`` directly rather than pyplot: no
global figure registry, no GUI backend, nothing to close. Rendering goes through
Agg into memory and the file is written atomically
(``fileio.atomic_write_bytes``), so a crash never leaves half a PNG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from jaxmia.attack import metrics, thresholds
from jaxmia.fileio import atomic_write_bytes

__all__ = [
    "MEMBER_COLOR",
    "NONMEMBER_COLOR",
    "ZERO_SHARE",
    "alpha_line",
    "interval_point",
    "log_loss_histogram",
    "log_roc_axes",
    "new_figure",
    "on_log",
    "pr_staircase",
    "plot_reflected_kdes",
    "reflected_kde",
    "save_png",
    "shade_member_region",
]

MEMBER_COLOR = "tab:blue"
NONMEMBER_COLOR = "tab:orange"


def new_figure(figsize) -> Figure:
    """A matplotlib Figure on the Agg canvas (no pyplot state, no display).

    Args:
      figsize: (width, height) in inches, floats; at 100 dpi a PNG of
        100 * width by 100 * height pixels.
    """
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path) -> Path:
    """Renders ``fig`` as PNG and writes it to ``path`` (str or Path) atomically.

    Returns:
      ``path`` as a Path.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


# Where a rate of 0 sits on log ROC axes: this share of the smallest non-zero rate shown,
# in a grey band of its own and marked "0", so that it is never mistaken for 1/l.
ZERO_SHARE = 0.5


def on_log(values, lo: float) -> np.ndarray:
    """Rates for log ROC axes from ``lo`` (``log_roc_axes``): 0 goes to its own place,
    lo * ZERO_SHARE; a positive rate below lo (none, when lo is the smallest) to lo.

    Returns:
      float64 array shaped like ``values``.
    """
    v = np.asarray(values, dtype=np.float64)
    return np.where(v > 0, np.maximum(v, lo), lo * ZERO_SHARE)


def log_roc_axes(
    ax, lo: float, *, xlabel: str = "false positive rate", ylabel: str = "true positive rate"
) -> float:
    """Makes ``ax`` a log-log ROC plot from a place for 0 to 1, with the chance diagonal.

    Rates of 0 have no place on log axes.  They are drawn at ``lo * ZERO_SHARE``
    (``on_log``), below the smallest rate ``lo`` and apart from it, in a grey band
    whose tick reads "0": an FPR of 0 is never drawn where an FPR of 1/l is.  Call
    it where the legend should list "chance": the diagonal is drawn at that point.
    The limits are fixed here, so whatever is drawn afterwards cannot stretch them.

    Args:
      ax: a matplotlib Axes.
      lo: float in (0, 1), the smallest non-zero rate shown; usually 1/l for l
        non-members, the smallest non-zero FPR the data can resolve.
      xlabel, ylabel: the axis labels.

    Returns:
      The position of a rate of 0, float.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    zero = lo * ZERO_SHARE
    band = zero * (lo / zero) ** 0.5  # halfway to lo on the log scale
    ax.axvspan(zero, band, color="0.92", lw=0, zorder=0)
    ax.axhspan(zero, band, color="0.92", lw=0, zorder=0)
    ax.plot([lo, 1], [lo, 1], color="gray", ls="--", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(zero, 1)
    ax.set_ylim(zero, 1)
    decades = [10.0**k for k in range(math.ceil(math.log10(lo) - 1e-9), 1)]
    ticks = [zero, *decades]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == zero else f"{v:g}"))
        axis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    return zero


def alpha_line(ax, alpha, lo: float, label: str) -> str | None:
    """The vertical line of the FPR asked for, when the axes can show it (alpha >= lo);
    else None is drawn and the note to say instead is returned."""
    if alpha is None:
        return None
    if alpha >= lo:
        ax.axvline(alpha, color="gray", ls=":", lw=1, label=label)
        return None
    return (
        f"alpha = {alpha:g} is below the smallest FPR these models resolve ({lo:.2g}): off the axis"
    )


def pr_staircase(ax, member_stat, nonmember_stat, **kw):
    """Draws the precision-recall staircase whose area is the average precision.

    Average precision sums (R_n - R_{n-1}) P_n over the cuts (``metrics.precision_recall``):
    precision P_n holds on the recall interval (R_{n-1}, R_n].  So the staircase starts
    at recall 0 and each step reaches back to the previous recall ("steps-pre"), and the
    area under the drawn line equals the AP the legend reports.

    Args:
      ax: a matplotlib Axes.
      member_stat, nonmember_stat: float[n_member], float[n_nonmember] attack statistics.
      kw: passed to ``ax.step`` (color, lw, label, ...).

    Returns:
      The Line2D drawn.
    """
    recall, precision = metrics.precision_recall(member_stat, nonmember_stat)
    x = np.concatenate([[0.0], recall])
    y = np.concatenate([precision[:1], precision])
    (line,) = ax.step(x, y, where="pre", **kw)
    return line


def interval_point(
    ax,
    x: float,
    y: float,
    x_ci: Sequence[float],
    y_ci: Sequence[float],
    *,
    lo: float,
    label: str,
    color: str = "tab:red",
) -> ErrorbarContainer:
    """A realised operating point (FPR ``x``, TPR ``y``) with bars spanning its intervals.

    A rate of 0 is drawn in its own place below ``lo`` (``on_log``), and nothing is
    clipped: a TPR of 1 sits on the top edge and would otherwise lose half its
    marker and its cap.

    Args:
      ax: a matplotlib Axes (log-log from ``log_roc_axes``, or linear).
      x, y: float, the point's FPR and TPR.
      x_ci, y_ci: (low, high) floats, the confidence intervals of x and y.
      lo: float, the smallest non-zero rate the axes show (``log_roc_axes``'s lo).
      label: its legend entry.
      color: of the marker and the bars.

    Returns:
      The errorbar container (the marker line, the caps, the two bar collections).
    """
    (px, x0, x1), (py, y0, y1) = on_log([x, *x_ci], lo), on_log([y, *y_ci], lo)
    xerr = np.array([[px - x0], [x1 - px]])
    yerr = np.array([[py - y0], [y1 - py]])
    bars = ax.errorbar(
        [px], [py], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3, label=label
    )
    for artist in [bars.lines[0], *bars.lines[1], *bars.lines[2]]:
        artist.set_clip_on(False)
    return bars


def reflected_kde(values) -> Callable[[np.ndarray], np.ndarray] | None:
    """A Gaussian KDE of values >= 0 (losses) reflected at 0, so no mass lies below 0.

    A plain KDE spills a pile-up at 0 (well-fitted members) onto negative losses,
    which cannot occur; mirroring the kernel mass back keeps the density a
    density on [0, inf).

    Args:
      values: float[n], finite and >= 0.

    Returns:
      density: float[m] -> float64[m], 0 below 0 and integrating to 1 over [0, inf),
      or None where no KDE can be fitted (too few or identical values).
    """
    kde = thresholds.fit_kde(values)
    if kde is None:
        return None

    def density(grid):
        g = np.asarray(grid, dtype=np.float64)
        return np.where(g >= 0, kde(g) + kde(-g), 0.0)

    return density


def log_loss_histogram(
    ax, member, nonmember, *, names=("members", "non-members"), unit: str = "points"
) -> None:
    """Histograms of member and non-member losses on a log axis, as fractions per bin.

    Members pile up near a loss of 0, where a linear axis puts them all in its first
    bin; on a log axis their spread shows.  A loss of exactly 0 has no place there:
    the title counts them.

    Args:
      ax: a matplotlib Axes.
      member, nonmember: float[n_member], float[n_nonmember] losses >= 0.
      names: the legend's names of the two sides.
      unit: what the losses are of, for the axis label ("fraction of the points per bin").
    """
    mem, non = np.asarray(member, np.float64), np.asarray(nonmember, np.float64)
    positive = np.concatenate([mem, non])
    positive = positive[positive > 0]
    n_zero = int(np.count_nonzero(mem <= 0) + np.count_nonzero(non <= 0))
    if positive.size:
        lo = float(positive.min())
        top = max(float(positive.max()), lo * 10)
        edges = np.logspace(np.log10(lo), np.log10(top), 61)
        for values, color, who in (
            (mem, MEMBER_COLOR, names[0]),
            (non, NONMEMBER_COLOR, names[1]),
        ):
            v = values[values > 0]
            ax.hist(
                v,
                bins=edges,
                alpha=0.45,
                color=color,
                weights=np.full(v.size, 1.0 / values.size),
                label=who,
            )
        ax.set_xscale("log")
    ax.set_xlabel("cross-entropy loss (log axis)")
    ax.set_ylabel(f"fraction of the {unit} per bin")
    title = "log axis"
    if n_zero:
        title += f" ({n_zero} losses of exactly 0 not shown)"
    ax.set_title(title, fontsize=10)


def plot_reflected_kdes(
    ax, grid, member, nonmember, *, names: tuple[str, str] = ("member", "non-member")
) -> None:
    """Dashed reflected KDEs (``reflected_kde``) of member and non-member losses over ``grid``.

    Args:
      ax: a matplotlib Axes.
      grid: float[m], points >= 0 to evaluate the densities at.
      member, nonmember: float[n_member], float[n_nonmember], losses >= 0; a side
        whose KDE cannot be fitted is left out.
      names: how the legend names the two sides ("KDE <name> (reflected at 0)").
    """
    for values, color, name in (
        (member, MEMBER_COLOR, names[0]),
        (nonmember, NONMEMBER_COLOR, names[1]),
    ):
        density = reflected_kde(values)
        if density is not None:
            ax.plot(
                grid,
                density(grid),
                color=color,
                lw=1.3,
                ls="--",
                label=f"KDE {name} (reflected at 0)",
            )


def shade_member_region(ax, region, label: str | None) -> None:
    """Shades the score intervals a likelihood-ratio rule calls members, inside the x-limits.

    The LR rule's member set need not be one side of a threshold (two Gaussians of
    unequal variance cut the axis into up to three pieces), so it is drawn as spans.
    The x-limits are kept as they were: a span reaching to infinity must not widen
    them.

    Args:
      ax: a matplotlib Axes whose x-axis is the score.
      region: [(low, high)] floats, None for an unbounded end.
      label: the legend entry, given to the first visible span only.
    """
    x0, x1 = ax.get_xlim()
    for a, b in region:
        a = x0 if a is None else max(a, x0)
        b = x1 if b is None else min(b, x1)
        if b > a:
            ax.axvspan(a, b, color="tab:green", alpha=0.12, label=label)
            label = None
    ax.set_xlim(x0, x1)
