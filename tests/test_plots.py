"""Tests for jaxmia.plots: valid PNGs, degenerate inputs, atomic writes."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from jaxmia import plots, stats

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


def _histograms(path, mem, non, **kw):
    return plots.plot_histograms(
        path,
        mem,
        non,
        threshold=stats.empirical_threshold(mem, non, 0.05).threshold,
        gaussian_member=stats.fit_gaussian(mem),
        gaussian_nonmember=stats.fit_gaussian(non),
        **kw,
    )


def test_plot_histograms(tmp_path):
    rng = np.random.default_rng(0)
    mem, non = rng.gamma(1.0, 0.2, 40), rng.normal(3.0, 1.0, 40)
    out = _histograms(tmp_path / "hist.png", mem, non, title_suffix=" [SYNTHETIC DATA]")
    assert out == tmp_path / "hist.png"
    _assert_png(out, 800, 500)
    _no_temp_files(tmp_path, ["hist.png"])


@pytest.mark.parametrize(
    ("mem", "non"),
    [
        ([1.0, 1.0, 1.0], [1.0, 1.0]),  # every loss equal
        ([0.5], [2.0]),  # one round
        ([0.5], [0.5]),
    ],
)
def test_plot_histograms_degenerate(tmp_path, mem, non):
    out = _histograms(tmp_path / "h.png", np.array(mem), np.array(non), kde=True)
    _assert_png(out, 800, 500)
    _no_temp_files(tmp_path, ["h.png"])


def test_plot_roc(tmp_path):
    rng = np.random.default_rng(1)
    mem, non = rng.normal(0.0, 1.0, 30), rng.normal(1.5, 1.0, 50)
    out = plots.plot_roc(
        tmp_path / "roc.png", mem, non, alpha=0.05, title_suffix=" [SYNTHETIC DATA]"
    )
    _assert_png(out, 1100, 500)
    # Degenerate: one value each, and all equal.
    plots.plot_roc(tmp_path / "roc1.png", [0.3], [0.3], alpha=0.05)
    plots.plot_roc(tmp_path / "roc2.png", [1.0, 1.0], [1.0, 1.0, 1.0], alpha=0.5)
    _assert_png(tmp_path / "roc1.png", 1100, 500)
    _no_temp_files(tmp_path, ["roc.png", "roc1.png", "roc2.png"])


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
    target = tmp_path / "hist.png"
    target.write_bytes(b"old")
    _histograms(target, np.array([0.1, 0.2]), np.array([1.0, 2.0]))
    _assert_png(target, 800, 500)
    _no_temp_files(tmp_path, ["hist.png"])
