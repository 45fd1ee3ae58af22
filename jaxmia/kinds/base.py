"""What an experiment kind provides, and the one path by which every kind writes its products.

A *kind* (single target, many targets, population, ...) is one folder under
``jaxmia/kinds/`` holding everything that is its own: its config keys and their
checks, its plan (which models to train, on which rows, scoring which images),
the arrays its run folder keeps and their schema, its analysis, figures, tables,
console text and file names.  Training, chunking, resuming, devices and hosts
are the same for every kind (experiment.py, training/, runs/).  ``Kind`` below
names what a kind must provide; ``kinds/__init__.py`` lists the kinds, and
nothing outside ``jaxmia/kinds/`` asks for a kind by its name.

This module and every kind's ``__init__`` import neither JAX nor matplotlib nor
scipy: a kind loads its analysis and figures only when asked to analyse, so that
reading a config stays cheap and ``jaxmia analyze --no-plots`` never loads
matplotlib.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from jaxmia.errors import UserError
from jaxmia.keys import Key
from jaxmia.runs import products
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import Job, Plan

__all__ = [
    "SYNTHETIC_SUFFIX",
    "UNVERIFIED_SUFFIX",
    "Analysis",
    "Kind",
    "KindBase",
    "metadata",
    "product_files",
    "refuse_bad_arrays",
    "write_run",
]

SYNTHETIC_SUFFIX = " [SYNTHETIC DATA]"  # added to every figure title of a synthetic run
UNVERIFIED_SUFFIX = " [UNVERIFIED DATA]"  # ... and of a run on data taken on the user's word


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What a kind's analysis of its arrays gives the writer.

    Attributes:
      results: the results.json dict without the run's own record (timing,
        devices); the writer appends that.
      figures: ``figures(folder, results)`` draws the kind's PNGs into ``folder``
        (called with the final results) and returns their paths.
      tables: ``tables(folder)`` writes the kind's tables (CSV), or None.
    """

    results: dict
    figures: Callable[[Path, dict], list]
    tables: Callable[[Path], Any] | None = None


class Kind(Protocol):
    """An experiment kind.  Implemented by one object per folder under kinds/."""

    name: ClassVar[str]  # the value of the ``experiment`` key
    keys: ClassVar[tuple[Key, ...]]  # its own config keys (config.py adds them)
    arrays_file: ClassVar[str]  # the raw arrays of every statistic, e.g. "losses.npz"
    figure_files: ClassVar[tuple[str, ...]]  # the PNGs its analysis may draw
    table_files: ClassVar[tuple[str, ...]]  # the tables it writes (CSV)
    metadata_keys: ClassVar[tuple[str, ...]]  # config keys results.json repeats

    def validate(self, cfg) -> None:
        """Checks that relate its keys (each key's own check already ran); UserError."""

    def check_against(self, cfg, n_train: int, n_test: int) -> None:
        """Checks that need the data set's size; UserError."""

    def resolve(self, cfg, n_train: int):
        """The config with whatever it leaves to the seed (a target, targets) filled in."""

    def plan(self, cfg, n_train: int) -> Plan:
        """Which rows each job trains on and which images every model scores."""

    def jobs(self, cfg) -> list[Job]:
        """Every model the config asks for, in the order the arrays list them."""

    def describe_job(self, job: Job) -> str:
        """One job in words, for messages ("calibration round 3, IN model")."""

    def examples_per_model(self, cfg) -> float:
        """Training examples per model and epoch, on average (for image-steps/s)."""

    def noise_group(self, cfg, job: Job) -> int:
        """The group of models that share one DP noise level (privacy.noise_multipliers)."""

    def canaries(self, cfg) -> tuple[int, ...]:
        """The training-set indices ``canary: mislabeled`` relabels (the targets)."""

    def arrays(self, cfg, plan: Plan, dataset, outputs: ModelOutputs) -> dict:
        """The arrays file's contents from the trained models' outputs."""

    def check_arrays(self, arrays: dict, where: str, cfg=None, n_train=None) -> None:
        """Refuses (UserError naming ``where``) arrays this jaxmia cannot analyse: not of
        the schema, out of range, non-finite where used, or (with ``cfg``, the run's own
        config from run.json) not of this run (classes, targets, the rows its plan draws
        from the seed, ...).  ``n_train`` (run.json's training-set size, None when
        unknown) bounds every training-set index and lets the plan be drawn again."""

    def counts(self, arrays: dict) -> dict:
        """The config keys that count models (n_iterations, ...), as the arrays hold them:
        a run that grew and was killed before its products keeps the arrays of the run
        before, and its results must say what those hold."""

    def analyze(self, arrays: dict, cfg, meta: dict) -> Analysis:
        """Every number, figure and table of a run, from its arrays alone."""

    def format_summary(self, results: dict) -> str:
        """The console summary of a results.json dict."""


class KindBase:
    """What every kind shares: its console text and figures live in the modules
    ``console.py`` and ``figures.py`` of its own package, loaded only when used
    (matplotlib only for figures), and a kind without cross-key checks or seeded
    choices needs no ``validate`` or ``resolve`` of its own."""

    def _module(self, part: str):
        return importlib.import_module(f"{type(self).__module__}.{part}")

    def validate(self, cfg) -> None:
        pass

    def resolve(self, cfg, n_train: int):
        return cfg

    def noise_group(self, cfg, job: Job) -> int:
        """A model's own round: a kind whose models must share a noise level says so."""
        return job.round

    def canaries(self, cfg) -> tuple[int, ...]:
        return ()

    def figures(self, arrays: dict, **extra) -> Callable[[Path, dict], list]:
        """``draw(folder, results)``: the kind's ``figures.write_figures`` on these arrays,
        each title ending in SYNTHETIC_SUFFIX for a synthetic run and UNVERIFIED_SUFFIX
        for a run on unverified data."""

        def draw(folder, results):
            suffix = SYNTHETIC_SUFFIX if results.get("synthetic") else ""
            suffix += UNVERIFIED_SUFFIX if results.get("unverified") else ""
            write = self._module("figures").write_figures
            return write(folder, arrays, results, suffix=suffix, **extra)

        return draw

    def format_summary(self, results: dict) -> str:
        return self._module("console").format_summary(results)


def refuse_bad_arrays(check, arrays: dict, where: str):
    """Runs ``check(arrays)`` (a schema or analysis check raising ValueError) and turns
    its complaint into one UserError line that names the file ``where``."""
    try:
        return check(arrays)
    except ValueError as e:
        raise UserError(
            f"{where}: {e}; it is not what this jaxmia wrote (damaged, edited or from another "
            "version): rerun the run to rewrite it"
        ) from None


def product_files(kind) -> tuple[str, ...]:
    """Every file a run of ``kind`` writes at the top of its folder, besides run.json."""
    return (
        "config.yaml",
        "results.json",
        products.RECORD_FILE,
        kind.arrays_file,
        *kind.table_files,
        *kind.figure_files,
    )


def metadata(kind, cfg, synthetic: bool, fingerprint: str | None = None) -> dict:
    """The results.json keys that describe the experiment (not computed from outputs).

    ``fingerprint`` is the data's (``Dataset.fingerprint``, run.json's
    ``data_fingerprint``); ``unverified`` says whether it is of data taken on the
    user's word (JAXMIA_UNVERIFIED_DATA=1), which every product then says.
    """
    from jaxmia.data import fingerprint_unverified

    meta = {
        "experiment": cfg.experiment,
        "dataset": cfg.dataset,
        "synthetic": bool(synthetic),
        "unverified": fingerprint_unverified(fingerprint),
        "data_fingerprint": fingerprint,
    }
    return {**meta, **{k: getattr(cfg, k) for k in kind.metadata_keys}}


def write_run(
    kind,
    run_dir,
    cfg,
    meta: dict,
    arrays: dict,
    run_info: dict,
    *,
    write_arrays=True,
    notes=(),
    between=None,
):
    """Analyses ``arrays`` and writes the kind's products; returns results.json's dict.

    The one path for a finished run, ``jaxmia analyze`` (``write_arrays=False``:
    the arrays file stays as it is) and the PyTorch baseline.  ``notes``: lines put
    first among the results' warnings (what ``jaxmia analyze`` found about the folder).
    ``between``: called before each file is written, may raise to stop (Ctrl-C).
    """
    analysis = kind.analyze(arrays, cfg, meta)
    results = {**analysis.results, **run_info}
    if notes:
        results["warnings"] = [*notes, *results.get("warnings", [])]
    draw = None
    if cfg.save_plots:

        def draw(folder):
            return analysis.figures(folder, results)

    out = products.write_products(
        Path(run_dir),
        config=cfg.own_dict(),
        arrays=arrays if write_arrays else None,
        results=results,
        figures=draw,
        figure_files=kind.figure_files,
        synthetic=meta["synthetic"],
        unverified=bool(meta.get("unverified")),
        arrays_name=kind.arrays_file,
        tables=analysis.tables,
        between=between,
        record={k: run_info[k] for k in products.RUN_KEYS if k in run_info}
        if write_arrays
        else None,
    )
    for what in out.get("skipped") or []:
        print(f"jaxmia: warning: non-finite loss for {what}; left out", file=sys.stderr)
    return out
