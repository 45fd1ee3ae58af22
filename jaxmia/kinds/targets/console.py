"""The console summary of a many-targets run."""

from __future__ import annotations

from jaxmia.console import ci_text, fmt, footer, header, is_number, privacy_lines

__all__ = ["format_summary"]


def format_summary(r: dict) -> str:
    """The console summary of a many-targets run (kinds/targets/analysis.py's results)."""
    lines = header(r)
    keys = ("n_targets", "n_models_used", "n_models", "score", "threshold_rule", "alpha")
    t, used, m, score, rule, alpha = (r.get(k) for k in keys)
    lines.append(
        f"Many targets: {t} targets scored by {used} of {m} models "
        f"(score {score}, rule {rule}, alpha {alpha})"
    )
    if is_number(r.get("auc_median")):
        lines.append(
            f"Per-target AUC: median {fmt(r['auc_median'])}, quartiles "
            f"[{fmt(r.get('auc_q1'))}, {fmt(r.get('auc_q3'))}], mean {fmt(r.get('auc_mean'))}"
        )
    most = r.get("most_vulnerable") or []
    if most:
        shown = ", ".join(
            f"{m.get('index')} ({m.get('label')}, AUC {fmt(m.get('auc'))})" for m in most[:5]
        )
        lines.append(f"Most vulnerable: {shown}")
    if is_number(r.get("n_power_at_least_half")):
        lines.append(f"Targets with power >= 0.5 at alpha: {r['n_power_at_least_half']}")
    ev = r.get("evaluation")
    if isinstance(ev, dict):
        for key, name in (("tpr", "TPR"), ("fpr", "FPR")):
            if is_number(ev.get(key)):
                ci = ev.get(f"{key}_ci")
                lines.append(
                    f"Evaluation {name} (pooled over targets): {fmt(ev[key])}"
                    + (f"  95% CI {ci_text(ci)}" if ci else "")
                )
    return "\n".join(lines + privacy_lines(r) + footer(r))
