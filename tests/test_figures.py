"""Tests for the single-target figures and jaxmia.plotting: valid PNGs, degenerate inputs,
atomic writes, and the shared helpers' numbers."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from jaxmia import plotting
from jaxmia.attack import metrics, scores, summary, thresholds
from jaxmia.kinds.single_target import figures as plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, width, height):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.shape[:2] == (height, width)
    assert img.shape[2] in (3, 4)
    # Something was drawn: not a blank canvas.
    assert img[..., :3].std() > 0.01


def _no_temp_files(folder, expected):
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


def test_plot_target(tmp_path):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = plots.plot_target(
        tmp_path / "target.png",
        img,
        label_name="cattle",
        index=123,
        title_suffix=" [SYNTHETIC DATA]",
    )
    _assert_png(out, 300, 300)
    assert out.stat().st_size < 50_000
    plots.plot_target(tmp_path / "grey.png", img[..., :1], label_name="x", index=0)
    _no_temp_files(tmp_path, ["target.png", "grey.png"])
    with pytest.raises(ValueError, match="uint8"):
        plots.plot_target(tmp_path / "bad.png", img.astype(np.float32), label_name="x", index=0)


def test_plot_overwrites_existing_file(tmp_path):
    target = tmp_path / "target.png"
    target.write_bytes(b"old")
    img = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    plots.plot_target(target, img, label_name="x", index=0)
    _assert_png(target, 300, 300)
    _no_temp_files(tmp_path, ["target.png"])


# ================================================================ issue 8: plot_attack


def _attack_case(rounds=80, e=16, score="loss", rule="empirical", seed=0):
    rng = np.random.default_rng(seed)
    z_in = rng.normal(0, 1, (rounds + e, 10))
    z_out = rng.normal(0, 1, (rounds + e, 10))
    z_in[:, 3] += rng.normal(5.0, 1.5, rounds + e)
    z_out[:, 3] += rng.normal(2.0, 1.5, rounds + e)
    s_in, s_out = scores.compute(score, z_in, 3), scores.compute(score, z_out, 3)
    res = summary.summarize(
        s_in[:rounds],
        s_out[:rounds],
        eval_member=s_in[rounds:],
        eval_nonmember=s_out[rounds:],
        alpha=0.1,
        rule=rule,
        score=score,
    )
    extra = {
        "member_loss": scores.loss_from_logits(z_in[:rounds], 3),
        "nonmember_loss": scores.loss_from_logits(z_out[:rounds], 3),
        "member_phi": scores.lira_from_logits(z_in[:rounds], 3),
        "nonmember_phi": scores.lira_from_logits(z_out[:rounds], 3),
    }
    return res, s_in[:rounds], s_out[:rounds], s_in[rounds:], s_out[rounds:], extra


@pytest.mark.parametrize(
    ("score", "rule", "width"),
    [("loss", "empirical", 1800), ("lira", "lira", 1800), ("hinge", "confident", 2400)],
)
def test_plot_attack_writes_three_pngs(tmp_path, score, rule, width):
    res, m, n, em, en, extra = _attack_case(score=score, rule=rule)
    out = plots.plot_attack(
        tmp_path, res, member=m, nonmember=n, eval_member=em, eval_nonmember=en,
        title_suffix=" [SYNTHETIC DATA]", **extra,
    )  # fmt: skip
    assert out == [tmp_path / "roc.png", tmp_path / "pr.png", tmp_path / plots.HISTOGRAMS_FILE]
    _assert_png(out[0], 640, 600)
    _assert_png(out[1], 640, 550)
    _assert_png(out[2], width, 480)  # loss (linear, log) and phi, plus hinge when it is the score
    _no_temp_files(tmp_path, ["roc.png", "pr.png", plots.HISTOGRAMS_FILE])


@pytest.mark.parametrize(("rounds", "e"), [(1, 1), (3, 0), (2, 2)])
def test_plot_attack_tiny_and_degenerate(tmp_path, rounds, e):
    res, m, n, em, en, _ = _attack_case(rounds=rounds, e=e)
    out = plots.plot_attack(tmp_path, res, member=m, nonmember=n, eval_member=em, eval_nonmember=en)
    _assert_png(out[2], 1200, 480)  # only the loss panels (linear, log): no phi given
    same = summary.summarize([1.0, 1.0], [1.0, 1.0], alpha=0.5)
    plots.plot_attack(tmp_path, same, member=[1.0, 1.0], nonmember=[1.0, 1.0])
    _assert_png(tmp_path / "roc.png", 640, 600)


def test_roc_operating_point_is_the_realised_one():
    res, m, n, em, en, _ = _attack_case(rounds=100, e=40)
    ev = res["evaluation"]
    s_m, s_n = scores.to_attack(m, "loss"), scores.to_attack(n, "loss")
    fig = plots._roc_figure(s_m, s_n, res, "")
    ax = fig.axes[0]
    zero = 0.01 * plotting.ZERO_SHARE
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx((zero, 1.0))  # 1/l to 1, and the place of 0
    assert ax.get_ylim() == pytest.approx((zero, 1.0))
    point = [ln for ln in ax.lines if ln.get_marker() == "o"]
    assert len(point) == 1
    x, y = point[0].get_xdata()[0], point[0].get_ydata()[0]
    assert (x, y) == tuple(plotting.on_log([ev["fpr"], ev["tpr"]], 0.01))
    assert x != res["alpha"] or ev["fpr"] == res["alpha"]
    # The curve is the ROC of the score (rates of 0 in their own place).
    fpr, tpr, _ = metrics.roc(s_m, s_n)
    curve = ax.lines[0]
    np.testing.assert_allclose(curve.get_xdata(), plotting.on_log(fpr, 0.01))
    np.testing.assert_allclose(curve.get_ydata(), plotting.on_log(tpr, 0.01))
    legend = "\n".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"AUC {res['auc']:.3f}" in legend and "TPR@0.1% FPR: n/a" in legend
    assert f"TPR@1% FPR: {res['tpr_at_fpr']['0.01']:.3f}" in legend
    # Without evaluation models the point is the calibration one.
    res["evaluation"] = None
    ax = plots._roc_figure(s_m, s_n, res, "").axes[0]
    point = [ln for ln in ax.lines if ln.get_marker() == "o"][0]
    assert point.get_xdata()[0] == plotting.on_log([res["calibration_fpr"]], 0.01)[0]
    assert point.get_ydata()[0] == res["power"]


def test_an_evaluation_fpr_of_zero_is_drawn_apart_from_the_calibration_step_at_one_over_l():
    res, m, n, em, en, _ = _attack_case(rounds=10, e=8)
    res["evaluation"] = {**res["evaluation"], "fpr": 0.0, "fpr_ci": [0.0, 0.3]}
    s_m, s_n = scores.to_attack(m, "loss"), scores.to_attack(n, "loss")
    ax = plots._roc_figure(s_m, s_n, res, "").axes[0]
    point = [ln for ln in ax.lines if ln.get_marker() == "o"][0]
    curve_x = ax.lines[0].get_xdata()
    assert 0.1 in curve_x  # the calibration step at FPR 1/l = 1/10
    assert point.get_xdata()[0] < 0.1  # FPR 0: its own place, marked "0"
    assert "0" in {t.get_text() for t in ax.get_xticklabels()}


def test_an_alpha_below_the_axis_is_said_and_not_listed():
    res, m, n, *_ = _attack_case(rounds=10, e=0)
    res["alpha"] = 0.01  # below 1/l = 0.1: no FPR that low on these 10 OUT models
    s_m, s_n = scores.to_attack(m, "loss"), scores.to_attack(n, "loss")
    ax = plots._roc_figure(s_m, s_n, res, "").axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any("alpha" in t for t in legend)
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "alpha = 0.01 is below" in notes


def _drawn_area(line) -> float:
    """The area under a drawn line as matplotlib draws it (its step style applied)."""
    from matplotlib.cbook import STEP_LOOKUP_MAP

    x, y = STEP_LOOKUP_MAP[line.get_drawstyle()](line.get_xdata(), line.get_ydata())
    return float(np.trapezoid(y, x))


@pytest.mark.parametrize("ties", [False, True])
def test_pr_drawn_area_equals_the_reported_average_precision(ties):
    # pr.png drew the staircase one step late (the demo: area 0.777 against AP 0.820).
    res, m, n, *_ = _attack_case(rounds=50, e=0, seed=4)
    s_m, s_n = -m, -n
    if ties:
        s_m, s_n = np.round(s_m), np.round(s_n)
    ax = plots._pr_figure(s_m, s_n, res, "").axes[0]
    ap = metrics.average_precision(s_m, s_n)
    assert _drawn_area(ax.lines[0]) == pytest.approx(ap, abs=1e-12)
    assert ax.lines[0].get_xdata()[0] == 0.0  # from recall 0
    assert ax.lines[0].get_label() == f"AP {ap:.3f}"
    assert "prevalence is ½ by construction" in ax.get_title()


def test_histograms_show_every_evaluation_tick_and_a_log_loss_panel(tmp_path, monkeypatch):
    res, m, n, em, en, extra = _attack_case()
    em = em.copy()
    em[0] = 60.0  # far beyond every calibration loss
    fig = plotting.new_figure((6, 4))
    ax = fig.add_subplot()
    plots._histogram_panel(ax, "loss", m, n, res, ev_mem=em, ev_non=en)
    lo, hi = ax.get_xlim()
    ticks = [ln for ln in ax.lines if ln.get_marker() == "|" and len(ln.get_xdata())]
    xs = np.concatenate([t.get_xdata() for t in ticks])
    assert xs.size == em.size + en.size and ((xs >= lo) & (xs <= hi)).all()
    # The figure: a log-loss panel beside the linear one, as the population figure has.
    captured = {}
    real = plots.save_png

    def keep(f, path):
        captured[path.name] = f
        return real(f, path)

    monkeypatch.setattr(plots, "save_png", keep)
    plots.plot_attack(tmp_path, res, member=m, nonmember=n, eval_member=em, **extra)
    axes = captured[plots.HISTOGRAMS_FILE].axes
    logs = [a for a in axes if a.get_xscale() == "log"]
    assert len(logs) == 1 and "log" in logs[0].get_xlabel()


def test_loss_panel_draws_nothing_below_zero():
    res, m, n, em, en, extra = _attack_case()
    fig = plotting.new_figure((6, 4))
    ax = fig.add_subplot()
    plots._histogram_panel(ax, "loss", m, n, res, ev_mem=em, ev_non=en)
    assert ax.get_xlim()[0] == 0.0
    for line in ax.lines:
        if len(line.get_xdata()):  # (the evaluation ticks' legend entry has no data)
            assert np.min(line.get_xdata()) >= 0.0
    # The threshold line is the summary's, labelled with its rule.
    vlines = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    assert vlines[0].get_xdata()[0] == res["threshold"]
    assert vlines[0].get_label() == res["decision"]


# ================================================================ jaxmia.plotting (issue 13)

from matplotlib.colors import to_rgb  # noqa: E402

from jaxmia.kinds.population import figures as plots_population  # noqa: E402


def test_new_figure_and_save_png_write_a_png_of_its_size_atomically(tmp_path):
    fig = plotting.new_figure((2.0, 1.5))
    fig.add_subplot().plot([0, 1], [1, 0])
    (tmp_path / "f.png").write_bytes(b"old")
    out = plotting.save_png(fig, str(tmp_path / "f.png"))
    assert out == tmp_path / "f.png"
    _assert_png(out, 200, 150)
    _no_temp_files(tmp_path, ["f.png"])


def test_every_figure_colours_members_and_non_members_alike():
    assert to_rgb(plotting.MEMBER_COLOR) != to_rgb(plotting.NONMEMBER_COLOR)
    res, m, n, em, en, _ = _attack_case()
    ax = plotting.new_figure((6, 4)).add_subplot()
    plots._histogram_panel(ax, "loss", m, n, res)
    pop = plots_population.histograms_figure(
        {"alpha": 0.1, "repetitions": 1},
        {
            "repetition": 0,
            "yeom": {"threshold": None},
            "alpha_rule": {"threshold": None},
        },
        np.abs(m),
        np.abs(n),
    ).axes[0]
    for axes in (ax, pop):
        colours = {to_rgb(p.get_facecolor()) for p in axes.patches}
        assert colours == {to_rgb(plotting.MEMBER_COLOR), to_rgb(plotting.NONMEMBER_COLOR)}
        assert to_rgb(axes.patches[0].get_facecolor()) == to_rgb(plotting.MEMBER_COLOR)


def test_log_roc_axes_span_lo_to_one_with_a_place_for_zero_and_the_chance_diagonal():
    ax = plotting.new_figure((4, 4)).add_subplot()
    ax.plot([1e-4, 0.5], [1e-5, 0.9])  # data below lo must not widen the axes
    zero = plotting.log_roc_axes(ax, 0.02, xlabel="FPR")
    ax.plot([1e-6, 5.0], [1e-6, 5.0])  # nor what is drawn afterwards
    assert zero == pytest.approx(0.02 * plotting.ZERO_SHARE) and zero < 0.02
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx((zero, 1.0))
    assert ax.get_ylim() == pytest.approx((zero, 1.0))
    # A rate of 0 has its own place, marked "0", apart from the smallest rate lo.
    labels = {t.get_text() for t in ax.get_xticklabels()}
    assert "0" in labels
    chance = [ln for ln in ax.lines if ln.get_label() == "chance"]
    assert len(chance) == 1
    np.testing.assert_array_equal(chance[0].get_xdata(), [0.02, 1])
    np.testing.assert_array_equal(chance[0].get_ydata(), [0.02, 1])
    assert chance[0].get_linestyle() == "--"
    assert ax.get_xlabel() == "FPR"
    assert ax.get_ylabel() == "true positive rate"
    np.testing.assert_allclose(plotting.on_log([0.0, 0.02, 0.5], 0.02), [zero, 0.02, 0.5])


def _bar_extents(bars):
    """{(axis, fixed coordinate): (low, high)} of an errorbar container's bars."""
    out = {}
    for collection in bars.lines[2]:
        for (x0, y0), (x1, y1) in collection.get_segments():
            if y0 == y1:
                out["x", y0] = (min(x0, x1), max(x0, x1))
            else:
                out["y", x0] = (min(y0, y1), max(y0, y1))
    return out


def test_interval_point_bars_span_its_intervals():
    ax = plotting.new_figure((4, 4)).add_subplot()
    plotting.log_roc_axes(ax, 0.01)
    bars = plotting.interval_point(
        ax, 0.05, 0.3, (0.02, 0.125), (0.2, 0.45), lo=0.01, label="rule: TPR 0.3"
    )
    point = bars.lines[0]
    assert (point.get_xdata()[0], point.get_ydata()[0]) == (0.05, 0.3)
    assert point.get_marker() == "o" and bars.get_label() == "rule: TPR 0.3"
    extents = _bar_extents(bars)
    assert extents["x", 0.3] == pytest.approx((0.02, 0.125))
    assert extents["y", 0.05] == pytest.approx((0.2, 0.45))
    caps = sorted(float(c.get_xdata()[0]) for c in bars.lines[1] if c.get_marker() == "|")
    assert caps == pytest.approx([0.02, 0.125])


def test_interval_point_draws_zeros_in_their_place_and_unclipped():
    ax = plotting.new_figure((4, 4)).add_subplot()
    zero = plotting.log_roc_axes(ax, 0.01)
    bars = plotting.interval_point(ax, 0.0, 1.0, (0.0, 0.3), (0.8, 1.0), lo=0.01, label="p")
    point = bars.lines[0]
    assert (point.get_xdata()[0], point.get_ydata()[0]) == (zero, 1.0)
    extents = _bar_extents(bars)
    assert extents["x", 1.0] == pytest.approx((zero, 0.3))
    assert extents["y", zero] == pytest.approx((0.8, 1.0))
    artists = [point, *bars.lines[1], *bars.lines[2]]
    assert not any(a.get_clip_on() for a in artists)


def test_reflected_kde_is_a_density_on_zero_to_infinity():
    rng = np.random.default_rng(3)
    losses = rng.exponential(0.05, 200)  # a member-like pile-up at 0
    naive = thresholds.fit_kde(losses)
    below = np.linspace(-1, 0, 20001)
    assert np.trapezoid(naive(below), below) > 0.05  # what a plain KDE puts below 0 (9%)
    density = plotting.reflected_kde(losses)
    above = np.linspace(0, 3, 300001)
    assert np.trapezoid(density(above), above) == pytest.approx(1.0, abs=1e-3)
    assert np.all(density(below[:-1]) == 0.0)
    # At 0 the reflection doubles the plain KDE: the mass that spilled over comes back.
    assert density(np.array([0.0]))[0] == pytest.approx(2 * naive(np.array([0.0]))[0])
    assert plotting.reflected_kde([0.5, 0.5, 0.5]) is None


def test_plot_reflected_kdes_draws_one_dashed_curve_per_fittable_side():
    ax = plotting.new_figure((4, 3)).add_subplot()
    grid = np.linspace(0.0, 2.0, 50)
    mem, non = np.array([0.1, 0.2, 0.4]), np.array([1.0, 1.5, 0.7])
    plotting.plot_reflected_kdes(ax, grid, mem, non, names=("members", "non-members"))
    assert [ln.get_label() for ln in ax.lines] == [
        "KDE members (reflected at 0)",
        "KDE non-members (reflected at 0)",
    ]
    assert [ln.get_color() for ln in ax.lines] == [plotting.MEMBER_COLOR, plotting.NONMEMBER_COLOR]
    assert all(ln.get_linestyle() == "--" for ln in ax.lines)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), plotting.reflected_kde(non)(grid))
    ax = plotting.new_figure((4, 3)).add_subplot()
    plotting.plot_reflected_kdes(ax, grid, [0.3, 0.3], non)  # no KDE of equal values
    assert [ln.get_label() for ln in ax.lines] == ["KDE non-member (reflected at 0)"]


def test_shade_member_region_spans_the_region_inside_the_limits():
    ax = plotting.new_figure((4, 3)).add_subplot()
    ax.set_xlim(-2.0, 3.0)
    region = [(None, -1.0), (-0.5, 0.5), (2.0, None), (5.0, 6.0)]
    plotting.shade_member_region(ax, region, "called member")
    assert ax.get_xlim() == (-2.0, 3.0)
    spans = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]
    np.testing.assert_allclose(spans, [(-2.0, -1.0), (-0.5, 0.5), (2.0, 3.0)])  # not (5, 6)
    assert [t.get_text() for t in ax.legend().get_texts()] == ["called member"]
