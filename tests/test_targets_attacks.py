"""The many-targets kind's attacks (kinds/targets/attacks.py): recomputed independently from the
saved arrays, the protocols, the curve, the products and jaxmia analyze's options."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxmia.analyze import main as analyze_main
from jaxmia.config import Config
from jaxmia.kinds import targets as kind
from jaxmia.kinds.targets import analysis, attacks
from jaxmia.kinds.targets.plan import REFERENCES
from jaxmia.runs.plan import seed_sequence

import reference_attacks as ref

C = 4
GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def attack_arrays(seed=0, n_targets=6, n_models=8, n_eval=4, queries=2, population=5):
    """A run's arrays with query views and population points: models in complementary pairs
    (inclusion 1/2), member targets' true-class logit raised by a per-target leak."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n_targets).astype(np.int32)
    leak = np.linspace(0.0, 3.0, n_targets)

    def pairs(m):
        first = rng.random((m // 2, n_targets)) < 0.5
        return np.stack([first, ~first], axis=1).reshape(m, n_targets)

    def logits(member, extra):
        m = member.shape[0]
        z = rng.normal(0.0, 1.0, (m, n_targets + extra, queries, C))
        lift = 1.0 + leak * member + rng.normal(0, 1, (m, n_targets))
        for t in range(n_targets):
            z[:, t, :, labels[t]] += lift[:, t, None]
        return z.astype(np.float32)

    member, e_member = pairs(n_models), pairs(n_eval)
    z, ez = logits(member, population), logits(e_member, population)
    pop_labels = rng.integers(0, C, population).astype(np.int32)

    def loss(zz):
        from jaxmia.attack import scores

        flat = zz[:, :n_targets, 0].reshape(-1, C).astype(np.float64)
        return (
            scores.loss_from_logits(flat, np.tile(labels, zz.shape[0]))
            .reshape(zz.shape[0], n_targets)
            .astype(np.float32)
        )

    out = {
        "targets": (100 + 7 * np.arange(n_targets)).astype(np.int32),
        "target_labels": labels,
        "target_images": rng.integers(0, 256, (n_targets, 32, 32, 3)).astype(np.uint8),
        "membership": member,
        "losses": loss(z),
        "logits": z[:, :n_targets, 0],
        "model_used": np.ones(n_models, bool),
        "eval_membership": e_member,
        "eval_losses": loss(ez),
        "eval_logits": ez[:, :n_targets, 0],
        "eval_model_used": np.ones(n_eval, bool),
        "class_names": np.array(["a", "b", "c", "d"]),
        "synthetic": np.array(True),
    }
    if queries > 1:
        out["augmented_logits"] = z[:, :n_targets, 1:]
        out["eval_augmented_logits"] = ez[:, :n_targets, 1:]
    if population:
        out["population_points"] = (1000 + np.arange(population)).astype(np.int32)
        out["population_labels"] = pop_labels
        out["population_logits"] = z[:, n_targets:]
        out["eval_population_logits"] = ez[:, n_targets:]
    return out


def config(arrays, **kw) -> Config:
    m, e = arrays["membership"].shape[0], arrays["eval_membership"].shape[0]
    base = dict(
        experiment="targets",
        targets=arrays["targets"].tolist(),
        n_models=m,
        eval_models=e,
        num_classes=C,
        dataset="synthetic",
        seed=5,
        bootstrap_samples=50,
    )
    return Config(**{**base, **kw})


# ---------------------------------------------------------------- signals by hand


def all_queries(arrays, prefix=""):
    z = arrays[f"{prefix}logits"][:, :, None]
    if f"{prefix}augmented_logits" in arrays:
        z = np.concatenate([z, arrays[f"{prefix}augmented_logits"]], axis=2)
    return z.astype(np.float64)


def phi(z, labels):
    """z_y - log sum_{c != y} e^{z_c}, written out."""
    y = np.broadcast_to(labels[:, None], z.shape[1:3])
    zy = np.take_along_axis(z, y[None, :, :, None], axis=-1)[..., 0]
    others = np.where(np.arange(C) == y[None, :, :, None], -np.inf, z)
    peak = others.max(-1)
    return zy - (peak + np.log(np.exp(others - peak[..., None]).sum(-1)))


def loss(z, labels):
    y = np.broadcast_to(labels[:, None], z.shape[1:3])
    zy = np.take_along_axis(z, y[None, :, :, None], axis=-1)[..., 0]
    peak = z.max(-1)
    return peak + np.log(np.exp(z - peak[..., None]).sum(-1)) - zy


def probability(z, labels, temperature):
    zz = z / temperature
    e = np.exp(zz - zz.max(-1, keepdims=True))
    soft = e / e.sum(-1, keepdims=True)
    y = np.broadcast_to(labels[:, None], z.shape[1:3])
    return np.take_along_axis(soft, y[None, :, :, None], axis=-1)[..., 0]


def naive_scores(name, keep, ref_sig, tgt_sig, ref_pop, tgt_pop, ref_block, tgt_block, cfg):
    """One protocol's scores of one attack, from reference_attacks, target model by model."""
    var = "fixed" if ref_sig.shape[0] < 64 else "per_example"
    if name == "loss":
        return -tgt_sig.mean(axis=2)
    if name == "lira_online":
        return ref.lira_online(keep, ref_sig, tgt_sig, var, cfg.lira_center)
    if name == "lira_offline":
        return ref.lira_offline(keep, ref_sig, tgt_sig, var, cfg.lira_center, cfg.lira_offline_test)
    g = cfg.rmia_gamma
    if name == "rmia_online":
        return ref.rmia(keep, ref_sig, ref_pop, tgt_sig, tgt_pop, g)
    if name == "rmia_offline":
        return ref.rmia(keep, ref_sig, ref_pop, tgt_sig, tgt_pop, g, cfg.rmia_offline_a)
    # rmia_offline_tuned: the references of the smallest block other than the target's own
    # are attacked by the other references for a = 0, 0.1, ..., 1.
    mates = ref_block == ref_block[ref_block != tgt_block[0]].min()
    rest = ~mates
    best, best_auc = 0.3, None
    for a in [round(0.1 * i, 1) for i in range(11)]:
        s = ref.rmia(keep[rest], ref_sig[rest], ref_pop[rest], ref_sig[mates], ref_pop[mates], g, a)
        ok = np.isfinite(s)
        mem, non = s[ok & keep[mates]], s[ok & ~keep[mates]]
        if mem.size and non.size and (best_auc is None or ref.auc(mem, non) > best_auc):
            best, best_auc = a, ref.auc(mem, non)
    return ref.rmia(keep, ref_sig, ref_pop, tgt_sig, tgt_pop, g, best)


def naive_protocol(arrays, cfg, name, fresh=False):
    labels, pop_labels = arrays["target_labels"], arrays.get("population_labels")
    z, ez = all_queries(arrays), all_queries(arrays, "eval_")
    pz = arrays.get("population_logits")
    epz = arrays.get("eval_population_logits")
    if name.startswith("rmia"):
        t = cfg.rmia_temperature
        sig, esig = probability(z, labels, t), probability(ez, labels, t)
        pop = probability(pz.astype(np.float64), pop_labels, t)
        epop = probability(epz.astype(np.float64), pop_labels, t)
    else:
        fn = loss if name == "loss" else phi
        sig, esig = fn(z, labels), fn(ez, labels)
        pop = epop = None
    keep, m = arrays["membership"], z.shape[0]
    block = np.arange(m) // 2
    if fresh:
        eblock = 10**6 + np.arange(ez.shape[0]) // 2
        return np.concatenate([
            naive_scores(name, keep, sig, esig[[k]], pop, None if epop is None else epop[[k]],
                         block, eblock[[k]], cfg)
            for k in range(ez.shape[0])
        ]), arrays["eval_membership"]  # fmt: skip
    rows = []
    for k in range(m):
        o = np.delete(np.arange(m), k)
        rows.append(
            naive_scores(name, keep[o], sig[o], sig[[k]], None if pop is None else pop[o],
                         None if pop is None else pop[[k]], block[o], block[[k]], cfg)
        )  # fmt: skip
    return np.concatenate(rows), keep


def pooled(scores, member):
    ok = np.isfinite(scores)
    return scores[ok & member], scores[ok & ~member]


@pytest.mark.parametrize("queries", [1, 2])
def test_leave_one_out_equals_an_independent_recomputation_from_the_saved_arrays(tmp_path, queries):
    arrays = attack_arrays(queries=queries)
    np.savez(tmp_path / "targets.npz", **arrays)
    with np.load(tmp_path / "targets.npz") as saved:
        saved = {k: saved[k] for k in saved.files}
    cfg = config(arrays, rmia_gamma=1.0)
    block, rows, drawing = attacks.targets_attacks(saved, cfg)
    loo = block["leave_one_out"]
    assert list(loo) == [
        "loss",
        "lira_online",
        "lira_offline",
        "rmia_online",
        "rmia_offline",
        "rmia_offline_tuned",
    ]
    assert block["target_models"] == 8 and block["queries"] == queries
    for name, entry in loo.items():
        scores, member = naive_protocol(saved, cfg, name)
        mem, non = pooled(scores, member)
        assert entry["n_scored"] == mem.size + non.size, name
        assert entry["auc"] == pytest.approx(ref.auc(mem, non), abs=1e-12), name
        for f in ("0.1",):
            assert entry["tpr_at_fpr"][f] == ref.tpr_at_fpr(mem, non, float(f)), name
        assert entry["tpr_at_fpr"]["0.01"] is None  # 24 non-member pairs: 1% is not resolvable
        # The figure's curve is the ROC of the same pairs.
        fpr, tpr = drawing["roc"][name]
        assert fpr[-1] == tpr[-1] == 1.0 and np.all(np.diff(fpr) >= 0)
        auc_of_curve = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        assert auc_of_curve == pytest.approx(entry["auc"], abs=1e-12), name
    tuned = loo["rmia_offline_tuned"]["tuned_a"]
    assert len(tuned["per_target_model"]) == 8
    assert all(a in [round(0.1 * i, 1) for i in range(11)] for a in tuned["per_target_model"])
    lo, hi = loo["lira_online"]["auc_ci"]
    assert lo <= loo["lira_online"]["auc"] <= hi


def test_fresh_models_are_attacked_by_every_calibration_model():
    arrays = attack_arrays(seed=1)
    cfg = config(arrays)
    block, _, _ = attacks.targets_attacks(arrays, cfg)
    fresh = block["fresh_models"]
    assert fresh["target_models"] == 4 and fresh["references_per_target_model"] == 8
    for name in ("loss", "lira_online", "lira_offline", "rmia_online", "rmia_offline_tuned"):
        scores, member = naive_protocol(arrays, cfg, name, fresh=True)
        mem, non = pooled(scores, member)
        assert fresh["attacks"][name]["auc"] == pytest.approx(ref.auc(mem, non), abs=1e-12), name


def test_the_reference_curve_subsamples_from_the_seed_and_keeps_the_target_models():
    arrays = attack_arrays(seed=2, n_models=10, population=0)
    cfg = config(arrays)
    block, rows, _ = attacks.targets_attacks(arrays, cfg)
    curve = block["reference_curve"]
    assert curve["references"] == [1, 2, 4, 8, 9]
    loo = block["leave_one_out"]
    for name, points in curve["attacks"].items():
        assert points["auc"][-1] == loo[name]["auc"]  # all 9 references: the protocol itself
    # Point r = 4 of lira_offline, recomputed with the references (seed, 0, k, 4) draws.
    z, labels, keep = all_queries(arrays), arrays["target_labels"], arrays["membership"]
    sig = phi(z, labels)
    parts = []
    for k in range(10):
        rng = np.random.default_rng(seed_sequence(5, REFERENCES, 0, k, 4))
        refs = np.sort(rng.choice(np.delete(np.arange(10), k), size=4, replace=False))
        parts.append(ref.lira_offline(keep[refs], sig[refs], sig[[k]], "fixed"))
    mem, non = pooled(np.concatenate(parts), keep)
    assert curve["attacks"]["lira_offline"]["auc"][2] == pytest.approx(ref.auc(mem, non), abs=1e-12)
    # One reference cannot give an example both IN and OUT references.
    assert curve["attacks"]["lira_online"]["auc"][0] is None
    assert curve["attacks"]["lira_online"]["n_scored"][0] == 0
    curve_rows = [r for r in rows if r["protocol"] == "reference_curve"]
    assert {r["references"] for r in curve_rows} == {1, 2, 4, 8}
    # Without population points there is no RMIA, and the block says why.
    assert "rmia_online" not in loo and any("population_size" in w for w in block["warnings"])


def test_results_do_not_depend_on_the_order_or_a_rerun():
    arrays = attack_arrays(seed=3)
    cfg = config(arrays)
    one = attacks.targets_attacks(arrays, cfg)[0]
    two = attacks.targets_attacks(dict(reversed(list(arrays.items()))), cfg)[0]
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    json.dumps(one, allow_nan=False)  # JSON-ready


def test_unused_models_are_left_out():
    arrays = attack_arrays(seed=4, n_models=10)
    arrays["model_used"][3] = False
    arrays["logits"][3] = np.nan
    cfg = config(arrays)
    block, _, _ = attacks.targets_attacks(arrays, cfg)
    assert block["target_models"] == 9 and block["references_per_target_model"] == 8
    assert block["leave_one_out"]["loss"]["n_pairs"] == 9 * 6


@pytest.mark.slow
def test_the_kind_writes_attacks_csv_and_the_figures(tmp_path):
    arrays = attack_arrays(seed=5)
    cfg = config(arrays)
    out = kind.KIND.analyze(arrays, cfg, {"synthetic": True})
    assert out.results["attacks"]["leave_one_out"]["loss"]["n_pairs"] == 48
    out.tables(tmp_path)
    back = analysis.read_targets_csv(tmp_path / "attacks.csv")
    _, rows, _ = attacks.targets_attacks(arrays, cfg)
    assert back == rows
    assert [r["attack"] for r in back[:6]] == list(out.results["attacks"]["leave_one_out"])
    paths = out.figures(tmp_path, out.results)
    # Every figure of the kind but the DP audit's, which only a dp: run draws.
    assert "privacy" not in out.results
    want = [f for f in kind.files.FIGURES if f != kind.files.AUDIT_FIGURE]
    assert [p.name for p in paths] == want
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda a: a.pop("eval_augmented_logits"), "lack eval_augmented_logits"),
        (
            lambda a: a.update(population_logits=a["population_logits"][:, :, :1]),
            "population_logits has 1 queries",
        ),
        (lambda a: a.update(population_labels=a["population_labels"] + 9), "population_labels"),
    ],
)
def test_damaged_attack_arrays_are_refused(damage, match):
    arrays = attack_arrays(seed=6)
    damage(arrays)
    with pytest.raises(ValueError, match=match):
        attacks.check_attack_arrays(arrays)


# ---------------------------------------------------------------- jaxmia analyze


def copy_golden(kind_name: str, into: Path) -> Path:
    run = into / kind_name
    shutil.copytree(GOLDEN / kind_name, run, ignore=shutil.ignore_patterns("expected"))
    return run


def test_analyze_takes_the_attacks_options(tmp_path, capsys):
    run = copy_golden("targets", tmp_path)
    assert analyze_main([str(run), "--no-plots"]) == 0
    base = json.loads((run / "results.json").read_text())["attacks"]
    assert base["settings"]["lira_center"] == "median"
    argv = [str(run), "--no-plots", "--lira-variance", "per_example", "--lira-center", "mean"]
    argv += ["--lira-offline-test", "two_sided", "--bootstrap-samples", "0"]
    assert analyze_main(argv) == 0
    new = json.loads((run / "results.json").read_text())["attacks"]
    assert new["settings"]["lira_variance"] == "per_example"
    assert new["settings"]["lira_center"] == "mean" and new["bootstrap_samples"] == 0
    assert new["leave_one_out"]["lira_offline"]["settings"]["test"] == "two_sided"
    assert new["leave_one_out"]["lira_online"]["auc_ci"] is None
    assert "lira_offline_test: two_sided" in (run / "config.yaml").read_text()
    assert "Attacks" in capsys.readouterr().out


def test_analyze_refuses_an_option_of_another_kind(tmp_path, capsys):
    run = copy_golden("single_target", tmp_path)
    assert analyze_main([str(run), "--no-plots", "--rmia-gamma", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rmia-gamma applies to experiment targets runs only" in err[0]
    assert analyze_main([str(run), "--no-plots", "--lira-variance", "fixed"]) == 0


def test_analyze_refuses_a_bad_option_value(tmp_path, capsys):
    run = copy_golden("targets", tmp_path)
    assert analyze_main([str(run), "--no-plots", "--rmia-offline-a", "1.5"]) == 2
    assert "rmia_offline_a must be in [0, 1]" in capsys.readouterr().err
    assert math.isfinite(json.loads((run / "results.json").read_text())["alpha"])
