"""``python -m jaxmia.analyze RUN_DIR``: the statistics and figures again, from saved outputs.

A run folder keeps every model's loss and logits of x (``losses.npz``), so any
score, threshold rule or alpha can be tried afterwards without JAX and without
training; for a many-targets run also the attacks' options (LiRA's variance,
centre and offline test, RMIA's gamma, temperature and a).  With the run's own
settings the new ``results.json`` equals the run's (its timing and device
fields are carried over as they were).  Other settings rewrite
``results.json``, ``config.yaml`` and the figures to match them; the saved
arrays are never changed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from jaxmia.attack.lira import CENTERS, OFFLINE_TESTS
from jaxmia.attack.thresholds import VARIANCES
from jaxmia.config import RULE_CHOICES, SCORE_CHOICES
from jaxmia.errors import OneLineParser, UserError, show


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="jaxmia analyze",
        description="Recompute a run's results.json and figures from its saved arrays.",
    )
    p.add_argument("run_dir", help="a finished run folder (<output-dir>/<run-name>)")
    p.add_argument("--score", choices=SCORE_CHOICES, help="membership score (default: the run's)")
    p.add_argument(
        "--threshold-rule",
        choices=RULE_CHOICES,
        help="threshold rule (default: the run's)",
    )
    p.add_argument("--alpha", type=float, help="false-positive rate asked for, in (0, 1)")
    p.add_argument("--delta", type=float, help="delta of the epsilon lower bound, in [0, 1)")
    p.add_argument("--confidence", type=float, help="confidence of the bounds, in [0.5, 1)")
    p.add_argument(
        "--lira-variance",
        choices=VARIANCES,
        help="LiRA's sigma: per example, one for all, or auto (fixed below 64 models)",
    )
    # The many-targets attacks' options (the config keys of the same names).
    p.add_argument("--lira-center", choices=CENTERS, help="centre of LiRA's Gaussians")
    p.add_argument("--lira-offline-test", choices=OFFLINE_TESTS, help="offline LiRA's test")
    p.add_argument("--rmia-gamma", type=float, help="RMIA's gamma, > 0")
    p.add_argument("--rmia-temperature", type=float, help="RMIA's softmax temperature T, > 0")
    p.add_argument("--rmia-offline-a", type=float, help="offline RMIA's a, in [0, 1]")
    p.add_argument("--bootstrap-samples", type=int, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--no-plots", action="store_true", help="leave the figures out")
    return p


# Options that set a config key of the same name (dashes for underscores).
_KEY_OPTIONS = (
    "score",
    "threshold_rule",
    "alpha",
    "delta",
    "confidence",
    "lira_variance",
    "lira_center",
    "lira_offline_test",
    "rmia_gamma",
    "rmia_temperature",
    "rmia_offline_a",
    "bootstrap_samples",
)


def _check_options_apply(kind, changes: dict) -> None:
    """An option for another kind's key is refused: it would be accepted and ignored."""
    from jaxmia import kinds
    from jaxmia.config import COMMON_KEYS

    common = {k.name for k in COMMON_KEYS}
    own = {k.name for k in kind.keys}
    for name in changes:
        if name in common or name in own or name == "save_plots":
            continue
        owners = [other.name for other in kinds.all_kinds() if name in {k.name for k in other.keys}]
        raise UserError(
            f"--{name.replace('_', '-')} applies to experiment {' or '.join(owners)} runs only; "
            f"this run is experiment {kind.name}"
        )


def _load(run_dir: Path):
    """(config, arrays, results.json's old dict, run.json's identity, notes) of a run folder,
    after every check of the arrays: the config's model counts are the arrays' own."""
    from jaxmia.config import config_from_dict
    from jaxmia.runs.store import read_identity, train_size

    identity = read_identity(run_dir, hint=_FOLDER_HINT)
    cfg = config_from_dict(identity["config"], source=f"{run_dir}/run.json")
    kind = cfg.kind
    npz = run_dir / kind.arrays_file
    if not npz.is_file():
        raise UserError(
            f"{run_dir} holds no {kind.arrays_file}: its run has not written its products "
            "(it was stopped, or is still running); run the same jaxmia command again to "
            "finish it"
        )
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        raise UserError(
            f"{npz} cannot be read ({show(str(e))}); rerun the run to rewrite it"
        ) from None
    kind.check_arrays(arrays, str(npz), cfg, train_size(identity))
    # The arrays say how many models there are: a run that grew and was killed before
    # its products keeps the arrays of the run before it, and run.json the new counts.
    counts = kind.counts(arrays)
    asked = cfg.to_dict()
    notes = [
        f"{kind.arrays_file} holds {n} for {key}, run.json asks for {asked[key]} (a run that "
        "changed its size and did not finish): these are the results of the arrays; run the "
        "same jaxmia command again to finish it"
        for key, n in counts.items()
        if asked[key] != n
    ]
    cfg = config_from_dict({**asked, **counts}, source=str(npz))
    old = {}
    with_results = run_dir / "results.json"
    if with_results.is_file():
        try:
            old = json.loads(with_results.read_text())
        except (OSError, ValueError):
            old = {}
    return cfg, arrays, old if isinstance(old, dict) else {}, identity, notes


_FOLDER_HINT = "give jaxmia analyze a run folder (<output-dir>/<run-name>)"


def _check_folder(run_dir: Path) -> None:
    """One line for a path that is not a folder to analyse."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise UserError(
            f"{show(str(run_dir))} is a symbolic link to {show(os.readlink(run_dir))}, which "
            "does not exist"
        )
    if not run_dir.exists():
        raise UserError(f"run folder not found: {show(str(run_dir))}")
    if not run_dir.is_dir():
        raise UserError(f"{show(str(run_dir))} is a file, not a run folder; {_FOLDER_HINT}")


def analyze(run_dir, *, stop=None, **overrides) -> dict:
    """Recomputes and rewrites the products of ``run_dir``; returns the new results.

    ``stop`` (an ``interrupt.StopFlag``) is checked before each file is written.

    Raises:
      UserError: a path that is not a jaxmia run folder, arrays this jaxmia cannot use
        (damaged, edited, another run's), settings out of range, nothing to analyse.
    """
    from jaxmia.config import config_from_dict
    from jaxmia.kinds.base import metadata, write_run
    from jaxmia.runs.products import RECORD_FILE, RUN_KEYS, read_record
    from jaxmia.runs.store import lock_folder

    run_dir = Path(run_dir)
    _check_folder(run_dir)
    cfg, arrays, old, identity, notes = _load(run_dir)
    changes = {k: v for k, v in overrides.items() if v is not None}
    _check_options_apply(cfg.kind, changes)
    cfg = config_from_dict({**cfg.to_dict(), **changes}, source="the command line")
    fd = lock_folder(run_dir)
    try:
        run_info = {k: old[k] for k in RUN_KEYS if k in old}
        # Without results.json the run's record (record.json) still knows how the models
        # were made, and run.json what made them.
        for key, value in (read_record(run_dir) or {}).items():
            run_info.setdefault(key, value)
        for key in ("results_hash", "jaxmia_version"):
            if key not in run_info and key in identity:
                run_info[key] = identity[key]
        lost = [k for k in RUN_KEYS if k not in run_info]
        if lost:
            notes = [
                *notes,
                f"the run's record is missing ({', '.join(lost)}): neither results.json nor "
                f"{RECORD_FILE} holds it (a folder from before {RECORD_FILE} was kept); "
                "left out, not invented",
            ]
        meta = metadata(cfg.kind, cfg, bool(arrays["synthetic"]), identity.get("data_fingerprint"))
        return write_run(
            cfg.kind,
            run_dir,
            cfg,
            meta,
            arrays,
            run_info,
            write_arrays=False,
            notes=notes,
            between=None if stop is None else stop.check,
        )
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # only before the stop flag is installed (start-up)
        print("jaxmia analyze: interrupted while starting; nothing was written", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from jaxmia.interrupt import StopFlag, StopRequested
    from jaxmia.kinds import format_summary

    overrides = {name: getattr(args, name) for name in _KEY_OPTIONS}
    if args.no_plots:
        overrides["save_plots"] = False
    stop = StopFlag(again=f"rerun jaxmia analyze {args.run_dir} to write the products again")
    with stop.installed():
        try:
            results = analyze(args.run_dir, stop=stop, **overrides)
        except UserError as e:
            print(f"jaxmia analyze: error: {e}", file=sys.stderr)
            return 2
        except StopRequested as e:
            if getattr(e, "products_begun", False):
                print(
                    f"jaxmia analyze: interrupted ({e}) while rewriting the products: "
                    "results.json is removed until the set is whole again; run jaxmia analyze "
                    f"{args.run_dir} again to write it",
                    file=sys.stderr,
                )
            else:
                print(f"jaxmia analyze: interrupted ({e}); nothing was written", file=sys.stderr)
            return e.exit_code
    print(format_summary(results))
    print(f"Rewrote the results and figures in {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
