"""The console summary of a population run."""

from __future__ import annotations

from jaxmia.console import footer, header, mean_ci

__all__ = ["format_summary"]


def format_summary(r: dict) -> str:
    """The console summary of a population-attack run (kinds/population/analysis.py's results)."""
    lines = header(r)
    lines.append(
        f"Population attack: {r.get('repetitions_used')} of {r.get('repetitions')} target "
        f"models, {r.get('n_member')} members and {r.get('n_nonmember')} non-members each "
        f"(score {r.get('score')}, rule {r.get('threshold_rule')}, alpha {r.get('alpha')})"
    )
    summary = r.get("summary") or {}
    for key, name in (
        ("auc", "AUC"),
        ("balanced_accuracy", "Balanced accuracy"),
        ("average_precision", "Average precision"),
    ):
        lines.append(f"{name}: {mean_ci(summary.get(key))}")
    for fpr, entry in (summary.get("tpr_at_fpr") or {}).items():
        lines.append(f"TPR at FPR {float(fpr):.1%}: {mean_ci(entry)}")
    for key, name in (("alpha_rule", "Threshold at alpha"), ("yeom", "Yeom rule")):
        part = summary.get(key) or {}
        fpr = part.get("fpr") or {}
        fpr_text = mean_ci(fpr)
        if fpr.get("ci") is None and str(fpr.get("note") or "").startswith("in sample, by"):
            fpr_text += " (in sample, by construction)"
        lines.append(
            f"{name}: threshold {mean_ci(part.get('threshold'))}; TPR {mean_ci(part.get('tpr'))}"
            f"; FPR {fpr_text}"
        )
        law = part.get("expected_heldout_fpr")
        if isinstance(law, dict) and law.get("mean") is not None:
            lines.append(f"  Expected FPR on fresh non-members {mean_ci(law)}")
    return "\n".join(lines + footer(r))
