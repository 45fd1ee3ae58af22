"""``python -m jaxmia.analyze RUN_DIR``: the statistics and figures again, from saved outputs.

A run folder keeps every model's loss and logits of x (``losses.npz``), so any
score, threshold rule or alpha can be tried afterwards without JAX and without
training.  With the run's own settings the new ``results.json`` equals the
run's (its timing and device fields are carried over as they were).  Other
settings rewrite ``results.json``, ``config.yaml`` and the figures to match
them; the saved arrays are never changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from jaxmia import analysis
from jaxmia.attack.scores import SCORES
from jaxmia.attack.thresholds import RULES
from jaxmia.errors import NonFiniteLoss, UserError, show


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        print(f"jaxmia analyze: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="jaxmia analyze",
        description="Recompute a run's results.json and figures from its saved arrays.",
    )
    p.add_argument("run_dir", help="a finished run folder (<output-dir>/<run-name>)")
    p.add_argument("--score", choices=tuple(SCORES), help="membership score (default: the run's)")
    p.add_argument(
        "--threshold-rule",
        choices=RULES,
        help="threshold rule (default: the run's)",
    )
    p.add_argument("--alpha", type=float, help="false-positive rate asked for, in (0, 1)")
    p.add_argument("--delta", type=float, help="delta of the epsilon lower bound, in [0, 1)")
    p.add_argument("--confidence", type=float, help="confidence of the bounds, in [0.5, 1)")
    p.add_argument("--no-plots", action="store_true", help="leave the figures out")
    return p


def _load(run_dir: Path):
    from jaxmia import kinds
    from jaxmia.config import config_from_dict
    from jaxmia.store import read_identity

    identity = read_identity(run_dir)
    cfg = config_from_dict(identity["config"], source=f"{run_dir}/run.json")
    npz = run_dir / kinds.get(cfg).arrays_name
    if not npz.is_file():
        raise UserError(f"{run_dir} holds no losses.npz yet; finish the run first")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        raise UserError(
            f"{npz} cannot be read ({show(str(e))}); rerun the run to rewrite it"
        ) from None
    required = analysis.SINGLE_TARGET_ARRAYS if cfg.experiment == "single_target" else ()
    missing = [k for k in required if k not in arrays]
    if missing:
        raise UserError(
            f"{npz} lacks {', '.join(missing[:4])}: written by an older jaxmia, without logits; "
            "rerun it with this version"
        )
    old = {}
    with_results = run_dir / "results.json"
    if with_results.is_file():
        try:
            old = json.loads(with_results.read_text())
        except (OSError, ValueError):
            old = {}
    return cfg, arrays, old


def analyze(run_dir, **overrides) -> dict:
    """Recomputes and rewrites the products of ``run_dir``; returns the new results."""
    from jaxmia import kinds
    from jaxmia.config import config_from_dict
    from jaxmia.products import RUN_KEYS
    from jaxmia.store import lock_folder

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {show(str(run_dir))}")
    cfg, arrays, old = _load(run_dir)
    changes = {k: v for k, v in overrides.items() if v is not None}
    cfg = config_from_dict({**cfg.to_dict(), **changes}, source="the command line")
    fd = lock_folder(run_dir)
    try:
        run_info = {k: old[k] for k in RUN_KEYS if k in old}
        meta = kinds.metadata(cfg, bool(arrays["synthetic"]))
        return kinds.get(cfg).write(run_dir, cfg, meta, arrays, run_info, write_arrays=False)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jaxmia.report import format_summary

    overrides = {
        "score": args.score,
        "threshold_rule": args.threshold_rule,
        "alpha": args.alpha,
        "delta": args.delta,
        "confidence": args.confidence,
    }
    if args.no_plots:
        overrides["save_plots"] = False
    try:
        results = analyze(args.run_dir, **overrides)
    except UserError as e:
        print(f"jaxmia analyze: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"jaxmia analyze: stopped: {e}", file=sys.stderr)
        return 1
    print(format_summary(results))
    print(f"Rewrote the results and figures in {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
