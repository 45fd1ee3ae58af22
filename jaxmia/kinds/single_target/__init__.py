"""The pipeline's single-point attack: l with/without pairs of models for one target x.

Round r trains an IN model on a random subset plus x and an OUT model on the
same subset alone; x's score under the l IN and l OUT models sets a threshold
at false-positive rate alpha, and fresh evaluation pairs test it.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from jaxmia import privacy
from jaxmia.errors import UserError
from jaxmia.keys import Key, integer
from jaxmia.kinds.base import Analysis, KindBase, refuse_bad_arrays
from jaxmia.kinds.single_target import files
from jaxmia.kinds.single_target.plan import (
    SingleTargetPlan,
    calibration_jobs,
    evaluation_jobs,
    resolve_target,
)
from jaxmia.runs.plan import CALIBRATION, Job

MAX_ROUNDS = 1_000_000  # a million models is more than any accelerator trains in a day


class SingleTarget(KindBase):
    name = "single_target"
    keys = (
        Key("target_index", None, integer(0, 2**31 - 1, allow_none=True)),
        # How many models: a run folder grows when these grow (not hashed).
        Key("n_iterations", 100, integer(1, MAX_ROUNDS), hashed=False),
        Key("eval_pairs", 1, integer(0, MAX_ROUNDS), hashed=False),
    )
    arrays_file = files.ARRAYS_FILE
    figure_files = files.FIGURES
    table_files = ()
    metadata_keys = ("target_index", "n_iterations", "eval_pairs", "subset_size", "epochs", "seed")

    def check_against(self, cfg, n_train: int, n_test: int) -> None:
        if cfg.target_index is not None and cfg.target_index >= n_train:
            raise UserError(
                f"target_index must be in [0, {n_train - 1}] for this data set "
                f"(or null to draw it from the seed), got {cfg.target_index}"
            )

    def resolve(self, cfg, n_train: int):
        return cfg.replace(target_index=resolve_target(cfg.target_index, cfg.seed, n_train))

    def plan(self, cfg, n_train: int) -> SingleTargetPlan:
        return SingleTargetPlan(
            cfg.seed, n_train, cfg.target_index, cfg.subset_size, cfg.batch_size
        )

    def jobs(self, cfg) -> list[Job]:
        return calibration_jobs(cfg.n_iterations) + evaluation_jobs(cfg.eval_pairs)

    def describe_job(self, job: Job) -> str:
        kind = "calibration round" if job.stream == CALIBRATION else "evaluation pair"
        return f"{kind} {job.round}, {'IN' if job.member else 'OUT'} model"

    def examples_per_model(self, cfg) -> float:
        return cfg.subset_size + 0.5  # the IN model has x too

    def noise_group(self, cfg, job: Job) -> int:
        # A round's IN and OUT model are the two neighbouring data sets of one
        # audit trial: one noise level for both (and for either stream alike).
        return job.round

    def canaries(self, cfg) -> tuple[int, ...]:
        return (cfg.target_index,)

    def arrays(self, cfg, plan, dataset, outputs) -> dict:
        from jaxmia.kinds.single_target.arrays import assemble

        x = cfg.target_index
        own = int(dataset.train_labels[x])
        label = privacy.trained_labels(cfg, [x], [own], len(dataset.class_names))[0]
        arrays = assemble(
            outputs,
            n_iterations=cfg.n_iterations,
            eval_pairs=cfg.eval_pairs,
            target_label=int(label),
            target_index=x,
            target_image=dataset.train_images[x],
            synthetic=dataset.synthetic,
        )
        arrays["class_names"] = np.array(dataset.class_names)
        if cfg.canary != "none":
            arrays["original_label"] = np.array(own, np.int32)
        if cfg.dp is not None:  # the IN job of each round (both of its models share sigma)
            arrays["noise_multiplier"] = privacy.noise_multipliers(
                cfg, calibration_jobs(cfg.n_iterations)[::2]
            )
            arrays["eval_noise_multiplier"] = privacy.noise_multipliers(
                cfg, evaluation_jobs(cfg.eval_pairs)[::2]
            )
        return arrays

    def check_arrays(self, arrays: dict, where: str, cfg=None, n_train=None) -> None:
        from jaxmia.kinds.single_target.arrays import check

        sizes = {"C": cfg.num_classes} if cfg is not None else {}
        if n_train is not None:
            sizes["N"] = n_train
        refuse_bad_arrays(partial(check, sizes=sizes), arrays, where)
        held = int(arrays["target_index"]) if "target_index" in arrays else None
        if cfg is not None and held is not None and held != cfg.target_index:
            raise UserError(
                f"{where}: holds target {held}, run.json's target_index is {cfg.target_index}; "
                "it is another run's: rerun the run to rewrite it"
            )

    def counts(self, arrays: dict) -> dict:
        return {
            "n_iterations": int(np.shape(arrays["member_losses"])[0]),
            "eval_pairs": int(np.shape(arrays["eval_member_losses"])[0]),
        }

    def analyze(self, arrays: dict, cfg, meta: dict) -> Analysis:
        from jaxmia.attack.summary import Settings
        from jaxmia.kinds.single_target import analysis
        from jaxmia.kinds.single_target.arrays import left_out

        names = [str(n) for n in np.asarray(arrays["class_names"]).tolist()]

        def name(label):
            label = int(label)
            return names[label] if 0 <= label < len(names) else str(label)

        settings = Settings.from_config(cfg)
        results = {
            **meta,
            "target_label": name(arrays["target_label"]),
            **analysis.single_target_results(arrays, settings),
            "skipped": left_out(arrays),
        }
        if cfg.canary != "none":
            own = arrays.get("original_label")
            results["canary"] = {
                "kind": cfg.canary,
                "label": name(arrays["target_label"]),
                "original_label": None if own is None else name(own),
            }
        if cfg.dp is not None:
            results["privacy"], warnings = analysis.privacy_audit(
                arrays, privacy.mechanism(cfg), settings
            )
            results["warnings"] = results["warnings"] + warnings
        return Analysis(results, self.figures(arrays))


KIND = SingleTarget()
