"""The console summary of a single-target run."""

from __future__ import annotations

from jaxmia.console import ci_text, fmt, footer, header, is_number, privacy_lines

__all__ = ["format_summary"]


def format_summary(results: dict) -> str:
    """The console summary of a single-target run, from its results.json dict.

    Keys used (any of them may be missing or None; its line is then left out):
    dataset, synthetic, target_index, target_label, n_iterations, subset_size,
    epochs, rounds_used, and the attack's keys from the attack summary (score,
    threshold_rule, alpha, decision, threshold, threshold_scale, power,
    calibration_fpr or fpr, k, n_member, n_nonmember, expected_heldout_fpr(_upper95),
    auc, balanced_accuracy, tpr_at_fpr, member/nonmember_loss (or score) mean/std,
    gaussian_threshold, gaussian_power, evaluation, epsilon_lower_bound, warnings),
    train_accuracy, test_accuracy, compile_seconds, train_seconds, models_per_second.
    """
    r = {k: v for k, v in results.items() if v is not None}
    lines: list[str] = header(r)

    def num(key):
        return is_number(r.get(key))

    def rate(x) -> str:
        return fmt(x) if is_number(x) else "n/a"

    if "target_index" in r:
        label = f" ({r['target_label']})" if "target_label" in r else ""
        lines.append(f"Target index: {r['target_index']}{label}")
    if "n_iterations" in r:
        extra = []
        if "subset_size" in r:
            extra.append(f"subset size {r['subset_size']}")
        if "epochs" in r:
            extra.append(f"{r['epochs']} epochs")
        tail = f" ({', '.join(extra)})" if extra else ""
        lines.append(f"Rounds (with/without pairs): {r['n_iterations']}{tail}")
    if "rounds_used" in r and r["rounds_used"] != r.get("n_iterations"):
        lines.append(f"Rounds used: {r['rounds_used']} (the rest had non-finite losses)")

    if "score" in r or "threshold_rule" in r:
        rule = r.get("threshold_rule", "empirical")
        lines.append(f"Score: {r.get('score', 'loss')}, threshold rule: {rule}")
    if "decision" in r:
        lines.append(f"Decision: {r['decision']}")
    bound = f" (FPR <= {r['alpha']:g})" if num("alpha") else ""
    if num("threshold"):
        scale = r.get("threshold_scale")
        on = f", on the {scale} scale" if scale and scale == "log likelihood ratio" else ""
        lines.append(f"Threshold{bound}{on}: {fmt(r['threshold'])}")
    elif "threshold" in results and "decision" in r:
        lines.append(f"Threshold{bound}: none (see the warnings)")
    cal_models = ""
    if num("n_member") and num("n_nonmember"):
        cal_models = f" on {r['n_member']} IN / {r['n_nonmember']} OUT calibration models"
    if num("power"):
        lines.append(f"Power (TPR){cal_models}: {fmt(r['power'])}")
    if num("calibration_fpr"):
        k = f" (k = {r['k']} allowed)" if num("k") else ""
        lines.append(f"Calibration FPR: {fmt(r['calibration_fpr'])}{k}")
    elif num("fpr"):
        lines.append(f"Empirical FPR: {fmt(r['fpr'])}")
    if num("expected_heldout_fpr"):
        upper = r.get("expected_heldout_fpr_upper95")
        up = f" (95% upper bound {fmt(upper)})" if is_number(upper) else ""
        lines.append(f"Expected FPR on fresh models: {fmt(r['expected_heldout_fpr'])}{up}")
    if num("auc"):
        lines.append(f"AUC: {fmt(r['auc'])}")
    if num("balanced_accuracy"):
        lines.append(f"Balanced accuracy: {fmt(r['balanced_accuracy'])}")
    if isinstance(r.get("tpr_at_fpr"), dict):
        parts = [f"{float(f) * 100:g}%: {rate(v)}" for f, v in r["tpr_at_fpr"].items()]
        lines.append("TPR at FPR " + ", ".join(parts))
    for key, who in (("member", "member"), ("nonmember", "non-member")):
        for kind, name in (("loss", "loss"), ("score", r.get("score", "score"))):
            if num(f"{key}_{kind}_mean"):
                spread = f" ± {fmt(r[f'{key}_{kind}_std'])}" if num(f"{key}_{kind}_std") else ""
                lines.append(f"Mean {name} {who}: {fmt(r[f'{key}_{kind}_mean'])}{spread}")
                break
    if num("gaussian_threshold"):
        lines.append(f"Gaussian threshold: {fmt(r['gaussian_threshold'])}")
    if num("gaussian_power"):
        lines.append(f"Gaussian power: {fmt(r['gaussian_power'])}")

    ev = r.get("evaluation")
    if isinstance(ev, dict):
        lines.append("Evaluation (held-out models):")
        for item in ev.get("items") or []:
            where = "x in train:    " if item.get("member") else "x not in train:"
            key = "loss" if "loss" in item else "score"
            name = "loss" if key == "loss" else r.get("score", "score")
            value = fmt(item[key]) if is_number(item.get(key)) else "nan"
            lines.append(
                f"  {where}  {name}={value}  predicted member={item.get('predicted_member')}"
                f"  correct={item.get('correct')}"
            )
        level = ev.get("confidence", 0.95)
        for key, name, hits, total in (
            ("tpr", "TPR", "true_positives", "n_member"),
            ("fpr", "FPR", "false_positives", "n_nonmember"),
        ):
            if is_number(ev.get(key)):
                ci = ev.get(f"{key}_ci")
                interval = f"  {level * 100:g}% CI {ci_text(ci)}" if ci else ""
                count = ""
                if is_number(ev.get(hits)) and is_number(ev.get(total)):
                    count = f" ({ev[hits]}/{ev[total]})"
                lines.append(f"  {name}: {fmt(ev[key])}{count}{interval}")
        if is_number(ev.get("accuracy")):
            lines.append(f"  Accuracy: {fmt(ev['accuracy'])}")

    eps = r.get("epsilon_lower_bound")
    if isinstance(eps, dict):
        level = eps.get("confidence", 0.95)
        head = f"Epsilon lower bound ({level * 100:g}% confidence, delta {eps.get('delta', 0):g})"
        if is_number(eps.get("value")):
            extra = []
            if is_number(eps.get("symmetric")):
                extra.append(f"symmetric {fmt(eps['symmetric'])}")
            best = eps.get("max_over_calibration_thresholds")
            if isinstance(best, dict) and is_number(best.get("value")):
                extra.append(f"best calibration threshold {fmt(best['value'])}")
            tail = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"{head}: {fmt(eps['value'])}{tail}")
        else:
            lines.append(f"{head}: n/a (needs evaluation models)")

    if num("train_accuracy"):
        lines.append(f"Train accuracy (mean over models): {fmt(r['train_accuracy'])}")
    if num("test_accuracy"):
        lines.append(f"Test accuracy (mean over models): {fmt(r['test_accuracy'])}")
    return "\n".join(lines + privacy_lines(r) + footer(r))
