"""The pipeline's general attack: members against non-members of one target model, R times.

Repetition r trains one target model on n members; n non-members come from the
rest of the training set, and both are scored by that model (kinds/population/
analysis for the alpha rule and the Yeom rule).
"""

from __future__ import annotations

import numpy as np

from jaxmia.errors import UserError
from jaxmia.keys import Key, integer
from jaxmia.kinds.base import Analysis
from jaxmia.kinds.population import files
from jaxmia.kinds.population.plan import PopulationPlan
from jaxmia.runs.plan import CALIBRATION, Job

MAX_REPETITIONS = 1_000_000


class Population:
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
        pass  # each key's own check says all

    def check_against(self, cfg, n_train: int, n_test: int) -> None:
        if 2 * cfg.subset_size > n_train:
            raise UserError(
                f"subset_size must be at most half the training set ({n_train // 2}) for the "
                f"population attack (members plus as many non-members), got {cfg.subset_size}"
            )

    def resolve(self, cfg, n_train: int):
        return cfg

    def plan(self, cfg, n_train: int) -> PopulationPlan:
        return PopulationPlan(cfg.seed, n_train, cfg.subset_size, cfg.batch_size)

    def jobs(self, cfg) -> list[Job]:
        return [Job(CALIBRATION, r, False) for r in range(cfg.repetitions)]

    def describe_job(self, job: Job) -> str:
        return f"repetition {job.round}"

    def examples_per_model(self, cfg) -> float:
        return cfg.subset_size

    def arrays(self, cfg, plan, dataset, outputs) -> dict:
        n = cfg.subset_size
        jobs = self.jobs(cfg)
        sel = outputs.select(jobs)
        sets = [plan.sets(j.round) for j in jobs]
        members = np.stack([m for m, _ in sets]).astype(np.int32)
        others = np.stack([o for _, o in sets]).astype(np.int32)
        labels = np.asarray(dataset.train_labels, np.int32)
        return {
            "member_rows": members,
            "nonmember_rows": others,
            "member_labels": labels[members],
            "nonmember_labels": labels[others],
            "member_losses": sel.loss[:, :n],
            "nonmember_losses": sel.loss[:, n:],
            "member_logits": sel.logits[:, :n],
            "nonmember_logits": sel.logits[:, n:],
            "model_used": sel.finite(),
            "train_accuracy": sel.train_accuracy,
            "test_accuracy": sel.test_accuracy,
            "class_names": np.array(dataset.class_names),
            "synthetic": np.array(bool(dataset.synthetic)),
        }

    def check_arrays(self, arrays: dict, where: str) -> None:
        pass  # analysis.check_population_arrays checks them as it reads them

    def analyze(self, arrays: dict, cfg, meta: dict) -> Analysis:
        from jaxmia.attack.summary import Settings
        from jaxmia.kinds.population import analysis

        settings = Settings.from_config(cfg)
        results = {**meta, **analysis.population_results(arrays, settings)}
        suffix = " [SYNTHETIC DATA]" if meta["synthetic"] else ""

        def figures(folder, final):
            from jaxmia.kinds.population.figures import write_figures

            return write_figures(folder, arrays, final, suffix=suffix)

        return Analysis(results, figures)

    def format_summary(self, results: dict) -> str:
        from jaxmia.kinds.population.console import format_summary

        return format_summary(results)


KIND = Population()
