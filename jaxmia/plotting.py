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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from jaxmia.attack import thresholds
from jaxmia.fileio import atomic_write_bytes

__all__ = [
    "MEMBER_COLOR",
    "NONMEMBER_COLOR",
    "interval_point",
    "log_roc_axes",
    "new_figure",
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


def log_roc_axes(
    ax, lo: float, *, xlabel: str = "false positive rate", ylabel: str = "true positive rate"
) -> None:
    """Makes ``ax`` a log-log ROC plot over [lo, 1] on both axes, with the chance diagonal.

    Call it where the legend should list "chance": the diagonal is drawn at that
    point. The limits are fixed here, so whatever is drawn afterwards cannot
    stretch them.

    Args:
      ax: a matplotlib Axes.
      lo: float in (0, 1), the smallest rate shown; usually 1/l for l non-members,
        the smallest non-zero FPR the data can resolve. Rates of 0 have no place
        on log axes; callers draw them at ``lo``.
      xlabel, ylabel: the axis labels.
    """
    ax.plot([lo, 1], [lo, 1], color="gray", ls="--", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)


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

    Everything below ``lo`` is drawn at ``lo``, the edge of log axes, and nothing is
    clipped: a TPR of 1 sits on the top edge and would otherwise lose half its
    marker and its cap.

    Args:
      ax: a matplotlib Axes (log-log from ``log_roc_axes``, or linear).
      x, y: float, the point's FPR and TPR.
      x_ci, y_ci: (low, high) floats, the confidence intervals of x and y.
      lo: float, the smallest value the axes show.
      label: its legend entry.
      color: of the marker and the bars.

    Returns:
      The errorbar container (the marker line, the caps, the two bar collections).
    """
    px, py = max(x, lo), max(y, lo)
    xerr = np.array([[px - max(x_ci[0], lo)], [max(x_ci[1], lo) - px]])
    yerr = np.array([[py - max(y_ci[0], lo)], [max(y_ci[1], lo) - py]])
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
