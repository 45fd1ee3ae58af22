"""PNG figures of the field's attacks on a many-targets run (kinds/targets/attacks.py's numbers).

* ``attacks_roc.png``: every attack's leave-one-out ROC on one log-log plot, in
  the style of the LiRA paper's figures, with its AUC and TPR at 0.1% FPR in the
  legend;
* ``reference_curve.png``: each attack's AUC and TPR at 0.1% FPR as the
  references per target model grow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmia.kinds.targets.files import ATTACKS_ROC_FILE, REFERENCE_CURVE_FILE
from jaxmia.plotting import log_roc_axes, new_figure, save_png

__all__ = ["plot_attacks_roc", "plot_reference_curve", "write_attack_figures"]

_STYLE = {  # one colour per attack family, solid online, dashed offline
    "loss": ("tab:gray", "-"),
    "lira_online": ("tab:blue", "-"),
    "lira_offline": ("tab:blue", "--"),
    "rmia_online": ("tab:red", "-"),
    "rmia_offline": ("tab:red", "--"),
    "rmia_offline_tuned": ("tab:orange", ":"),
}


def _fmt(v, digits=3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def plot_attacks_roc(path, roc: dict, block: dict, n_nonmember: int, *, title_suffix="") -> Path:
    """Every attack's leave-one-out ROC, log-log from 1/(non-member pairs) to 1.

    Args:
      roc: {attack name: (fpr float64[G], tpr float64[G])} (``metrics.roc`` of the pairs).
      block: results.json's ``attacks`` (for the legends' AUC and TPR at 0.1% FPR).
      n_nonmember: the non-member pairs: the lowest FPR drawn is 1 / n_nonmember.
    """
    lo = 1.0 / max(n_nonmember, 1)
    fig = new_figure((6.6, 6.2))
    ax = fig.add_subplot()
    entries = block["leave_one_out"] or {}
    for name, (fpr, tpr) in roc.items():
        color, ls = _STYLE.get(name, ("black", "-"))
        e = entries.get(name, {})
        at = (e.get("tpr_at_fpr") or {}).get("0.001")
        ax.step(
            np.maximum(fpr, lo),
            np.maximum(tpr, lo),
            where="post",
            color=color,
            ls=ls,
            lw=1.6,
            label=f"{name}: AUC {_fmt(e.get('auc'))}, TPR@0.1% {_fmt(at)}",
        )
    log_roc_axes(ax, lo)
    q = block["queries"]
    ax.set_title(
        f"Leave-one-model-out ROC{title_suffix}\n{block['target_models']} target models x "
        f"{block['examples']} targets, {block['references_per_target_model']} references "
        f"each, {q} quer{'y' if q == 1 else 'ies'}",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def plot_reference_curve(path, curve: dict, *, title_suffix="") -> Path:
    """AUC and TPR at low FPR of every attack against the references per target model.

    The right panel follows TPR at 0.1% FPR, or at 1% where no point resolves 0.1%
    (too few non-member pairs); a missing point is one its pairs cannot resolve.
    """
    refs = np.asarray(curve["references"], np.float64)
    fig = new_figure((11, 4.6))
    axes = fig.subplots(1, 2)
    attacks = curve["attacks"]
    low = "tpr_at_fpr_0.001"
    if all(v is None for points in attacks.values() for v in points[low]):
        low = "tpr_at_fpr_0.01"
    fpr_text = low.rsplit("_", 1)[1]
    panels = (("auc", "AUC"), (low, f"TPR at {float(fpr_text) * 100:g}% FPR"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, points in attacks.items():
            color, ls = _STYLE.get(name, ("black", "-"))
            vals = np.array([np.nan if v is None else v for v in points[key]], np.float64)
            ax.plot(refs, vals, marker="o", color=color, ls=ls, lw=1.5, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(refs)
        ax.set_xticklabels([str(int(r)) for r in refs])
        ax.set_xlabel("reference models per target model")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].axhline(0.5, color="gray", ls="--", lw=1)
    axes[1].set_ylim(bottom=0)
    axes[0].legend(fontsize="small")
    axes[1].set_title("a missing point: its non-member pairs cannot resolve the FPR", fontsize=8)
    fig.suptitle(f"The attacks as references grow (the same target models){title_suffix}")
    fig.tight_layout()
    return save_png(fig, path)


def write_attack_figures(folder, drawing: dict, results: dict, *, suffix: str) -> list[Path]:
    """attacks_roc.png and reference_curve.png into ``folder`` (what there is to draw)."""
    folder = Path(folder)
    block = results.get("attacks") or {}
    written = []
    if drawing.get("roc"):
        written.append(
            plot_attacks_roc(
                folder / ATTACKS_ROC_FILE,
                drawing["roc"],
                block,
                drawing["n_nonmember"],
                title_suffix=suffix,
            )
        )
    if drawing.get("curve"):
        written.append(
            plot_reference_curve(
                folder / REFERENCE_CURVE_FILE, drawing["curve"], title_suffix=suffix
            )
        )
    return written
