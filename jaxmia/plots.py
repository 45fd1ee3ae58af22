"""PNG plots of a run: loss histograms, ROC curves and the target image.

Figures are built with ``matplotlib.figure.Figure`` directly rather than pyplot,
so there is no global figure registry, no GUI backend and nothing to close;
rendering goes through Agg. Each PNG is rendered into memory and then written
atomically (``report.atomic_write_bytes``), so a crash never leaves half a file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxmia import stats
from jaxmia.report import atomic_write_bytes

__all__ = ["plot_histograms", "plot_roc", "plot_target"]

_MEMBER_COLOR = "tab:blue"
_NONMEMBER_COLOR = "tab:orange"
_MAX_BINS = 80


def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _shared_bins(member: np.ndarray, nonmember: np.ndarray) -> np.ndarray:
    pooled = np.concatenate([member, nonmember])
    edges = np.histogram_bin_edges(pooled, bins="auto")
    if edges.size - 1 > _MAX_BINS:
        edges = np.histogram_bin_edges(pooled, bins=_MAX_BINS)
    return edges


def plot_histograms(
    path,
    member,
    nonmember,
    *,
    threshold: float,
    gaussian_member: stats.GaussianFit,
    gaussian_nonmember: stats.GaussianFit,
    kde: bool = True,
    title_suffix: str = "",
) -> Path:
    """Density histograms of the target's member and non-member losses.

    Args:
      path: where the PNG goes.
      member: float[n_member]; nonmember: float[n_nonmember] (1-D, finite).
      threshold: t of the rule loss < t, drawn as a vertical line; its legend
        gives the power and FPR it achieves on these losses.
      gaussian_member, gaussian_nonmember: fitted normals, drawn as curves
        (a fit with std 0 is a point mass and has no curve).
      kde: also draw Gaussian KDEs (dashed) where they can be fitted.
      title_suffix: appended to the title (" [SYNTHETIC DATA]" for synthetic runs).

    Returns:
      ``path`` as a Path.
    """
    mem = stats.check_losses(member, "member losses")
    non = stats.check_losses(nonmember, "non-member losses")
    t = float(threshold)
    edges = _shared_bins(mem, non)

    fig = _new_figure((8, 5))
    ax = fig.add_subplot()
    ax.hist(
        mem,
        bins=edges,
        density=True,
        alpha=0.45,
        color=_MEMBER_COLOR,
        label=f"member (x in train), n={mem.size}",
    )
    ax.hist(
        non,
        bins=edges,
        density=True,
        alpha=0.45,
        color=_NONMEMBER_COLOR,
        label=f"non-member (x not in train), n={non.size}",
    )

    lo, hi = min(edges[0], t), max(edges[-1], t)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    grid = np.linspace(lo - pad, hi + pad, 400)
    for fit, color, who in (
        (gaussian_member, _MEMBER_COLOR, "member"),
        (gaussian_nonmember, _NONMEMBER_COLOR, "non-member"),
    ):
        if fit.std > 0:
            z = (grid - fit.mean) / fit.std
            pdf = np.exp(-0.5 * z**2) / (fit.std * np.sqrt(2 * np.pi))
            ax.plot(
                grid,
                pdf,
                color=color,
                lw=2,
                label=f"Gaussian fit {who} (μ={fit.mean:.3g}, σ={fit.std:.3g})",
            )
    if kde:
        for values, color, who in (
            (mem, _MEMBER_COLOR, "member"),
            (non, _NONMEMBER_COLOR, "non-member"),
        ):
            density = stats.fit_kde(values)
            if density is not None:
                ax.plot(grid, density(grid), color=color, lw=1.2, ls="--", label=f"KDE {who}")

    power = float(np.mean(mem < t))
    fpr = float(np.mean(non < t))
    ax.axvline(
        t, color="black", lw=1.5, ls=":", label=f"t = {t:.4g} (power {power:.3f}, FPR {fpr:.3f})"
    )
    ax.set_xlabel("cross-entropy loss of the target x")
    ax.set_ylabel("density")
    ax.set_title("Loss of x: models trained with vs without it" + title_suffix)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc(path, member, nonmember, *, alpha: float, title_suffix: str = "") -> Path:
    """ROC of the rule loss < t: linear axes (with AUC) and log-log axes (as in LiRA).

    Args:
      path: where the PNG goes.
      member: float[n_member]; nonmember: float[n_nonmember].
      alpha: the target FPR; the log-log panel marks the TPR reached at FPR <= alpha.
      title_suffix: appended to the title.

    Returns:
      ``path`` as a Path.
    """
    fpr, tpr, _ = stats.roc_curve(member, nonmember)
    area = stats.auc(member, nonmember)
    chosen = stats.empirical_threshold(member, nonmember, alpha)

    fig = _new_figure((11, 5))
    lin, log = fig.subplots(1, 2)

    lin.plot(fpr, tpr, color="tab:blue", lw=2, label=f"loss < t (AUC = {area:.3f})")
    lin.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="chance")
    lin.set_xlim(0, 1)
    lin.set_ylim(0, 1)
    lin.set_xlabel("false positive rate")
    lin.set_ylabel("true positive rate")
    lin.set_title("ROC")
    lin.legend(loc="lower right", fontsize="small")

    # Log axes cannot show 0: rates are floored at half the smallest resolvable
    # rate, so the curve still starts in the lower left corner.
    floor = 0.5 * min(1.0 / chosen.n_nonmember, 1.0 / chosen.n_member, alpha)
    log.loglog(
        np.clip(fpr, floor, 1), np.clip(tpr, floor, 1), color="tab:blue", lw=2, label="loss < t"
    )
    log.loglog([floor, 1], [floor, 1], color="gray", ls="--", lw=1, label="chance")
    log.axvline(alpha, color="black", ls=":", lw=1)
    log.plot(
        [alpha],
        [max(chosen.power, floor)],
        marker="o",
        color="tab:red",
        ls="none",
        label=f"FPR ≤ {alpha:g}: TPR {chosen.power:.3f}",
    )
    log.set_xlim(floor, 1)
    log.set_ylim(floor, 1)
    log.set_xlabel("false positive rate")
    log.set_ylabel("true positive rate")
    log.set_title("ROC (log-log)")
    log.legend(loc="lower right", fontsize="small")

    fig.suptitle("Membership of x from its loss" + title_suffix)
    fig.tight_layout()
    return _save(fig, path)


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

    fig = _new_figure((3, 3))
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
    return _save(fig, path)
