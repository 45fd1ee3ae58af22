"""The console summary of a many-targets run."""

from __future__ import annotations

from jaxmia.console import ci_text, fmt, footer, header, is_number

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
        level = ev.get("confidence", 0.95)
        over = f", over {ev['n_models']} models" if is_number(ev.get("n_models")) else ""
        for key, name in (("tpr", "TPR"), ("fpr", "FPR")):
            if is_number(ev.get(key)):
                ci = ev.get(f"{key}_ci")
                lines.append(
                    f"Evaluation {name} (pooled over targets): {fmt(ev[key])}"
                    + (f"  {level * 100:g}% CI {ci_text(ci)}{over}" if ci else "")
                )
    eps = r.get("epsilon_lower_bound")
    if isinstance(eps, dict) and is_number(eps.get("value")):
        lines.append(
            f"Epsilon lower bound ({eps.get('confidence', 0.95) * 100:g}% confidence, delta "
            f"{eps.get('delta', 0):g}, the evaluation model as the unit): {fmt(eps['value'])}"
        )
    return "\n".join(lines + footer(r))
