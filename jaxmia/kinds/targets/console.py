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
    lines += _attack_lines(r.get("attacks"))
    return "\n".join(lines + footer(r))


def _cell(v, ci=None) -> str:
    if not is_number(v):
        return "n/a"
    return fmt(v, 3) + (f" [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]" if ci else "")


def _table(entries: dict, confidence) -> list[str]:
    level = f"{confidence * 100:g}% CI" if is_number(confidence) else "CI"
    head = f"  {'attack':<20} {'AUC [' + level + ']':<24} {'TPR@0.1%FPR':<24} {'TPR@1%FPR':<24}"
    lines = [head + " bal. acc."]
    for name, e in entries.items():
        tpr, cis = e.get("tpr_at_fpr") or {}, e.get("tpr_at_fpr_ci") or {}
        lines.append(
            f"  {name:<20} {_cell(e.get('auc'), e.get('auc_ci')):<24} "
            f"{_cell(tpr.get('0.001'), cis.get('0.001')):<24} "
            f"{_cell(tpr.get('0.01'), cis.get('0.01')):<24} {_cell(e.get('balanced_accuracy'))}"
        )
    return lines


def _attack_lines(block) -> list[str]:
    """The attacks' tables (kinds/targets/attacks.py): leave one model out, fresh models."""
    if not isinstance(block, dict) or not block.get("leave_one_out"):
        return []
    q = block.get("queries")
    lines = [
        f"Attacks, leave one model out ({block.get('target_models')} target models x "
        f"{block.get('examples')} targets, {block.get('references_per_target_model')} "
        f"references each, {q} quer{'y' if q == 1 else 'ies'}, one threshold over all pairs):"
    ]
    conf = block.get("confidence")
    lines += _table(block["leave_one_out"], conf)
    fresh = block.get("fresh_models")
    if isinstance(fresh, dict) and fresh.get("attacks"):
        lines.append(
            f"Attacks on {fresh.get('target_models')} fresh models "
            f"({fresh.get('references_per_target_model')} references each):"
        )
        lines += _table(fresh["attacks"], conf)
    lines += [f"  ! {w}" for w in block.get("warnings") or []]
    return lines
