"""Many targets on one pool of models: each model trains on a balanced random share of T targets.

Every target is attacked as the single-target run attacks x, with the models
that trained on it as its IN models and the rest as its OUT models; fresh
evaluation models test each target's threshold.  The field's attacks (LiRA,
RMIA, the loss attack) then run on the whole pool under the leave-one-model-out
protocol papers report (attacks.py).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from jaxmia import privacy
from jaxmia.attack import lira, rmia
from jaxmia.errors import UserError, show
from jaxmia.keys import Key, choice, integer, integer_list, number
from jaxmia.kinds.base import Analysis, KindBase, refuse_bad_arrays
from jaxmia.kinds.targets import files
from jaxmia.kinds.targets.plan import TargetsPlan, draw_targets, inclusion_block
from jaxmia.runs.plan import CALIBRATION, EVALUATION, Job

MAX_MODELS = 1_000_000
MAX_TARGETS = 100_000
MAX_BOOTSTRAP = 100_000
QUERIES = (1, 2, 18, 50)  # the image; and its mirror; x shifts of ±1 px; x shifts of ±2 px


def _queries(name, v) -> None:
    if isinstance(v, bool) or v not in QUERIES:
        raise UserError(f"{name} must be one of {', '.join(map(str, QUERIES))}, got {show(v)}")


class Targets(KindBase):
    name = "targets"
    keys = (
        Key("targets", None, integer_list(MAX_TARGETS)),  # training-set indices
        Key("n_targets", None, integer(1, MAX_TARGETS, allow_none=True), hashed=False),
        # Models whose memberships build the per-target distributions; more later
        # grows the run folder (not hashed).
        Key("n_models", 64, integer(2, MAX_MODELS), hashed=False),
        # Each target's share of models trained on it (a/b, b <= 64).
        Key(
            "inclusion",
            0.5,
            number(0, 1, lo_open=True, hi_open=True, what="strictly between 0 and 1"),
        ),
        Key("eval_models", 0, integer(0, MAX_MODELS), hashed=False),
        # Views every model scores of each target and population point
        # (training/queries.py); 1 is the plain image alone, as before the key.
        Key("queries", 1, _queries, hash_default=False),
        # Points no model trains on, scored by every model (RMIA's population z).
        Key("population_size", 0, integer(0, MAX_TARGETS), hash_default=False),
        # The attacks' options (attacks.py); jaxmia analyze recomputes them.
        Key("lira_center", "median", choice(lira.CENTERS), hashed=False),
        Key("lira_offline_test", "one_sided", choice(lira.OFFLINE_TESTS), hashed=False),
        Key("rmia_gamma", rmia.GAMMA, number(0, 1e6, lo_open=True, hi_open=False), hashed=False),
        Key(
            "rmia_temperature",
            rmia.TEMPERATURE,
            number(0, 1e6, lo_open=True, hi_open=False),
            hashed=False,
        ),
        Key(
            "rmia_offline_a",
            rmia.OFFLINE_A,
            number(0, 1, lo_open=False, hi_open=False),
            hashed=False,
        ),
        Key("bootstrap_samples", 1000, integer(0, MAX_BOOTSTRAP), hashed=False),
    )
    arrays_file = files.ARRAYS_FILE
    figure_files = files.FIGURES
    table_files = files.TABLES
    metadata_keys = (
        "n_models",
        "eval_models",
        "inclusion",
        "subset_size",
        "epochs",
        "seed",
        "queries",
        "population_size",
    )

    def validate(self, cfg) -> None:
        if (cfg.targets is None) == (cfg.n_targets is None):
            raise UserError("experiment targets needs exactly one of targets (a list) or n_targets")
        try:
            _, b = inclusion_block(cfg.inclusion)
        except ValueError:
            raise UserError(
                f"inclusion must be a fraction a/b with b <= 64 (0.5, 0.25, ...), got "
                f"{cfg.inclusion}"
            ) from None
        for name in ("n_models", "eval_models"):
            if getattr(cfg, name) % b:
                raise UserError(
                    f"{name} must be a multiple of {b} for inclusion {cfg.inclusion} (so that "
                    f"every target is in exactly the same number of models), got "
                    f"{getattr(cfg, name)}"
                )

    def check_against(self, cfg, n_train: int, n_test: int) -> None:
        t = len(cfg.targets) if cfg.targets is not None else cfg.n_targets
        z = cfg.population_size
        if cfg.subset_size + t + z > n_train:
            raise UserError(
                f"subset_size + the number of targets + population_size must be at most the "
                f"training-set size {n_train}, got {cfg.subset_size} + {t} + {z}"
            )
        if cfg.targets is not None and max(cfg.targets) >= n_train:
            raise UserError(
                f"targets must be training-set indices in [0, {n_train - 1}], "
                f"got {max(cfg.targets)}"
            )

    def resolve(self, cfg, n_train: int):
        if cfg.targets is not None:
            return cfg
        # The drawn list replaces n_targets, so config.yaml names every target.
        drawn = draw_targets(cfg.seed, n_train, cfg.n_targets).tolist()
        return cfg.replace(targets=drawn, n_targets=None)

    def plan(self, cfg, n_train: int) -> TargetsPlan:
        return TargetsPlan(
            cfg.seed,
            n_train,
            tuple(cfg.targets),
            cfg.subset_size,
            cfg.batch_size,
            cfg.inclusion,
            queries=cfg.queries,
            population_size=cfg.population_size,
        )

    def jobs(self, cfg) -> list[Job]:
        return [Job(CALIBRATION, m, False) for m in range(cfg.n_models)] + [
            Job(EVALUATION, m, False) for m in range(cfg.eval_models)
        ]

    def describe_job(self, job: Job) -> str:
        kind = "model" if job.stream == CALIBRATION else "evaluation model"
        return f"{kind} {job.round}"

    def examples_per_model(self, cfg) -> float:
        return cfg.subset_size + cfg.inclusion * len(cfg.targets)

    def noise_group(self, cfg, job: Job) -> int:
        # The b models of a block share their targets' memberships: one level for
        # the block, so each target's IN and OUT models are at the same sigma.
        return job.round // inclusion_block(cfg.inclusion)[1]

    def canaries(self, cfg) -> tuple[int, ...]:
        return tuple(cfg.targets)

    def arrays(self, cfg, plan, dataset, outputs) -> dict:
        from jaxmia.kinds.targets.arrays import assemble

        arrays = assemble(cfg, plan, dataset, outputs)
        if cfg.dp is not None:  # the sigma of each model (a block's models share it)
            arrays["noise_multiplier"] = privacy.noise_multipliers(
                cfg, self.jobs(cfg)[: cfg.n_models]
            )
            arrays["eval_noise_multiplier"] = privacy.noise_multipliers(
                cfg, self.jobs(cfg)[cfg.n_models :]
            )
        return arrays

    def check_arrays(self, arrays: dict, where: str, cfg=None, n_train=None) -> None:
        from jaxmia.kinds.targets.analysis import check_targets_arrays
        from jaxmia.kinds.targets.attacks import check_attack_arrays

        sizes = {} if n_train is None else {"N": n_train}
        if cfg is not None:
            sizes["C"] = cfg.num_classes
            if cfg.targets is not None:
                sizes["T"] = len(cfg.targets)
        a = refuse_bad_arrays(partial(check_targets_arrays, sizes=sizes), arrays, where)
        refuse_bad_arrays(check_attack_arrays, arrays, where)
        if cfg is not None and cfg.targets is not None:
            held = a["targets"].tolist()
            if held != list(cfg.targets):
                i = next(
                    i for i, (x, y) in enumerate(zip(held, cfg.targets, strict=True)) if x != y
                )
                raise UserError(
                    f"{where}: holds other targets than run.json lists (target {i}: "
                    f"{held[i]} in the file, {cfg.targets[i]} in run.json); it is another "
                    "run's: rerun the run to rewrite it"
                )
        if cfg is not None and cfg.targets is not None and n_train is not None:
            self._check_drawn(arrays, where, cfg, n_train)

    def _check_drawn(self, arrays: dict, where: str, cfg, n_train: int) -> None:
        """The membership and population points are those run.json's plan draws."""
        plan = self.plan(cfg, n_train)
        for prefix, stream in (("", CALIBRATION), ("eval_", EVALUATION)):
            held = arrays.get(f"{prefix}membership")
            if held is None or len(held) == 0:
                continue
            jobs = [Job(stream, m, False) for m in range(len(held))]
            drawn = plan.membership(jobs).reshape(held.shape)
            if not np.array_equal(held, drawn):
                m = int(np.flatnonzero((held != drawn).any(axis=1))[0])
                raise UserError(
                    f"{where}: {prefix}membership of model {m} is not what run.json's seed "
                    f"({cfg.seed}) draws; it is another run's: rerun the run to rewrite it"
                )
        if "population_points" in arrays and not np.array_equal(
            arrays["population_points"], plan.population
        ):
            raise UserError(
                f"{where}: holds other population points than run.json's seed ({cfg.seed}) "
                "draws; it is another run's: rerun the run to rewrite it"
            )

    def counts(self, arrays: dict) -> dict:
        e = arrays["eval_membership"] if "eval_membership" in arrays else np.zeros((0, 0))
        return {"n_models": int(np.shape(arrays["membership"])[0]), "eval_models": len(e)}

    def analyze(self, arrays: dict, cfg, meta: dict) -> Analysis:
        from jaxmia.attack.summary import Settings
        from jaxmia.kinds.targets import analysis, attacks

        settings = Settings.from_config(cfg)
        summary, rows = analysis.targets_results(arrays, settings)
        block, attack_rows, drawing = attacks.targets_attacks(arrays, cfg)
        results = {**meta, **summary, "attacks": block}
        if cfg.canary != "none":
            results["canary"] = {"kind": cfg.canary, "n_targets": len(arrays["targets"])}
        if cfg.dp is not None:
            results["privacy"], warnings = analysis.privacy_audit(
                arrays, privacy.mechanism(cfg), settings
            )
            results["warnings"] = results["warnings"] + warnings

        def tables(folder):
            analysis.write_targets_csv(folder / files.CSV_FILE, rows)
            analysis.write_targets_csv(folder / files.ATTACKS_CSV_FILE, attack_rows)

        return Analysis(results, self.figures(arrays, rows=rows, attacks=drawing), tables)


KIND = Targets()
