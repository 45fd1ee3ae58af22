"""The pipeline's general attack: members against non-members of one target model, R times.

Repetition r trains one target model on n members; n non-members come from the
rest of the training set, and both are scored by that model (kinds/population/
analysis for the alpha rule and the Yeom rule).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from jaxmia import privacy
from jaxmia.errors import UserError
from jaxmia.keys import Key, integer
from jaxmia.kinds.base import Analysis, KindBase, refuse_bad_arrays
from jaxmia.kinds.population import files
from jaxmia.kinds.population.plan import PopulationPlan
from jaxmia.runs.plan import CALIBRATION, Job

MAX_REPETITIONS = 1_000_000


class Population(KindBase):
    name = "population"
    keys = (
        # Target models, each trained on subset_size members; more grows the run.
        Key("repetitions", 1, integer(1, MAX_REPETITIONS), hashed=False),
    )
    arrays_file = files.ARRAYS_FILE
    figure_files = files.FIGURES
    table_files = ()
    metadata_keys = ("repetitions", "subset_size", "epochs", "seed")

    def validate(self, cfg) -> None:
        if cfg.canary != "none":
            raise UserError(
                f"canary: {cfg.canary} needs a target to relabel (experiment single_target or "
                "targets); the population attack has none"
            )

    def check_against(self, cfg, n_train: int, n_test: int) -> None:
        if 2 * cfg.subset_size > n_train:
            raise UserError(
                f"subset_size must be at most half the training set ({n_train // 2}) for the "
                f"population attack (members plus as many non-members), got {cfg.subset_size}"
            )

    def plan(self, cfg, n_train: int) -> PopulationPlan:
        return PopulationPlan(cfg.seed, n_train, cfg.subset_size, cfg.batch_size)

    def jobs(self, cfg) -> list[Job]:
        return [Job(CALIBRATION, r, False) for r in range(cfg.repetitions)]

    def describe_job(self, job: Job) -> str:
        return f"repetition {job.round}"

    def examples_per_model(self, cfg) -> float:
        return cfg.subset_size

    def arrays(self, cfg, plan, dataset, outputs) -> dict:
        from jaxmia.kinds.population.arrays import assemble

        return assemble(cfg, plan, dataset, outputs, self.jobs(cfg))

    def check_arrays(self, arrays: dict, where: str, cfg=None, n_train=None) -> None:
        from jaxmia.kinds.population.analysis import check_population_arrays

        sizes = {"C": cfg.num_classes, "n": cfg.subset_size} if cfg is not None else {}
        if n_train is not None:
            sizes["N"] = n_train
        refuse_bad_arrays(partial(check_population_arrays, sizes=sizes), arrays, where)
        if cfg is None or n_train is None:
            return
        plan = self.plan(cfg, n_train)
        for r in range(len(arrays["model_used"])):
            members, others = plan.sets(r)
            if not (
                np.array_equal(arrays["member_rows"][r], members)
                and np.array_equal(arrays["nonmember_rows"][r], others)
            ):
                raise UserError(
                    f"{where}: repetition {r} holds other member or non-member rows than "
                    f"run.json's seed ({cfg.seed}) draws; it is another run's: rerun the run "
                    "to rewrite it"
                )

    def counts(self, arrays: dict) -> dict:
        return {"repetitions": int(np.shape(arrays["model_used"])[0])}

    def analyze(self, arrays: dict, cfg, meta: dict) -> Analysis:
        from jaxmia.attack.summary import Settings
        from jaxmia.kinds.population import analysis

        settings = Settings.from_config(cfg)
        results = {**meta, **analysis.population_results(arrays, settings)}
        if cfg.dp is not None:
            # The accountant's epsilon only: members against non-members of one model
            # are not neighbouring data sets, so this attack bounds no epsilon.
            results["privacy"], warnings = privacy.privacy_block(
                privacy.mechanism(cfg), settings.confidence
            )
            results["privacy"]["method"] = (
                "accountant only: the population attack compares different points, not "
                "neighbouring data sets; audit with experiment single_target or targets"
            )
            results["warnings"] = results["warnings"] + warnings
        return Analysis(results, self.figures(arrays))


KIND = Population()
