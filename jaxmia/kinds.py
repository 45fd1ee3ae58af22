"""The three experiments, each a plan plus an analysis on the same path.

An experiment kind says which models to train (its jobs and its plan, plan.py),
how their outputs stack into the arrays a run folder keeps, and how those
arrays become results and figures (analysis*.py, products.py).  Training,
chunking, resuming, devices and hosts are the same for every kind
(experiment.py).  Nothing here imports JAX, so ``jaxmia analyze`` can use the
same writers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from jaxmia import analysis, products
from jaxmia.attack.summary import Settings
from jaxmia.outputs import ModelOutputs
from jaxmia.plan import (
    CALIBRATION,
    EVALUATION,
    Job,
    PopulationPlan,
    SingleTargetPlan,
    TargetsPlan,
    calibration_jobs,
    draw_targets,
    evaluation_jobs,
    resolve_target,
)


def resolve(cfg, n_train: int):
    """The config with whatever it leaves to the seed (target, targets) filled in."""
    if cfg.experiment == "single_target":
        return cfg.replace(target_index=resolve_target(cfg.target_index, cfg.seed, n_train))
    if cfg.experiment == "targets" and cfg.targets is None:
        # The drawn list replaces n_targets, so config.yaml names every target.
        drawn = draw_targets(cfg.seed, n_train, cfg.n_targets).tolist()
        return cfg.replace(targets=drawn, n_targets=None)
    return cfg


def get(cfg):
    return {"single_target": SingleTarget, "targets": Targets, "population": Population}[
        cfg.experiment
    ]


def _write(
    run_dir, cfg, arrays, results, figures, arrays_name, save_plots, write_arrays, meta, tables=None
):
    out = products.write_products(
        Path(run_dir),
        config=cfg.to_dict(),
        arrays=arrays if write_arrays else None,
        results=results,
        figures=figures if save_plots else None,
        synthetic=meta["synthetic"],
        arrays_name=arrays_name,
        tables=tables,
    )
    for what in out.get("skipped") or []:
        print(f"jaxmia: warning: non-finite loss for {what}; left out", file=sys.stderr)
    return out


class SingleTarget:
    """The pipeline's single-point attack: l with/without pairs for one target x."""

    arrays_name = "losses.npz"

    @staticmethod
    def plan(cfg, n_train):
        return SingleTargetPlan(
            cfg.seed, n_train, cfg.target_index, cfg.subset_size, cfg.batch_size
        )

    @staticmethod
    def jobs(cfg) -> list[Job]:
        return calibration_jobs(cfg.n_iterations) + evaluation_jobs(cfg.eval_pairs)

    @staticmethod
    def examples_per_model(cfg) -> float:
        return cfg.subset_size + 0.5

    @staticmethod
    def arrays(cfg, plan, dataset, outputs: ModelOutputs) -> dict:
        arrays = analysis.single_target_arrays(
            outputs,
            n_iterations=cfg.n_iterations,
            eval_pairs=cfg.eval_pairs,
            target_label=int(dataset.train_labels[cfg.target_index]),
            target_image=dataset.train_images[cfg.target_index],
            synthetic=dataset.synthetic,
        )
        return {**arrays, "class_names": np.array(dataset.class_names)}

    @staticmethod
    def write(run_dir, cfg, meta, arrays, run_info, *, write_arrays=True) -> dict:
        names = [str(n) for n in np.asarray(arrays["class_names"]).tolist()]
        label = int(arrays["target_label"])
        results = {
            **meta,
            "target_label": names[label] if 0 <= label < len(names) else str(label),
            **analysis.single_target_results(arrays, Settings.from_config(cfg)),
            "skipped": analysis.left_out(arrays),
            **run_info,
        }
        suffix = " [SYNTHETIC DATA]" if meta["synthetic"] else ""

        def figures(folder):
            return analysis.single_target_figures(folder, arrays, results, suffix=suffix)

        return _write(
            run_dir, cfg, arrays, results, figures, "losses.npz", cfg.save_plots, write_arrays, meta
        )


class Targets:
    """Many targets: each model trains on a balanced random share of them."""

    arrays_name = "targets.npz"

    @staticmethod
    def plan(cfg, n_train):
        return TargetsPlan(
            cfg.seed, n_train, tuple(cfg.targets), cfg.subset_size, cfg.batch_size, cfg.inclusion
        )

    @staticmethod
    def jobs(cfg) -> list[Job]:
        return [Job(CALIBRATION, m, False) for m in range(cfg.n_models)] + [
            Job(EVALUATION, m, False) for m in range(cfg.eval_models)
        ]

    @staticmethod
    def examples_per_model(cfg) -> float:
        return cfg.subset_size + cfg.inclusion * len(cfg.targets)

    @staticmethod
    def arrays(cfg, plan, dataset, outputs: ModelOutputs) -> dict:
        targets = np.asarray(cfg.targets, np.int32)

        def part(stream, n):
            jobs = [Job(stream, m, False) for m in range(n)]
            sel = outputs.select(jobs)
            member = plan.membership(jobs).reshape(n, len(targets))
            return member, sel, analysis.finite_model(sel)

        member, cal, used = part(CALIBRATION, cfg.n_models)
        e_member, ev, e_used = part(EVALUATION, cfg.eval_models)
        return {
            "targets": targets,
            "target_labels": np.asarray(dataset.train_labels[targets], np.int32),
            "target_images": np.asarray(dataset.train_images[targets], np.uint8),
            "membership": member,
            "losses": cal.loss,
            "logits": cal.logits,
            "model_used": used,
            "eval_membership": e_member,
            "eval_losses": ev.loss,
            "eval_logits": ev.logits,
            "eval_model_used": e_used,
            "train_accuracy": cal.train_accuracy,
            "test_accuracy": cal.test_accuracy,
            "class_names": np.array(dataset.class_names),
            "synthetic": np.array(bool(dataset.synthetic)),
        }

    @staticmethod
    def write(run_dir, cfg, meta, arrays, run_info, *, write_arrays=True) -> dict:
        from jaxmia import analysis_targets

        settings = Settings.from_config(cfg)
        summary, rows = analysis_targets.targets_results(arrays, settings)
        results = {**meta, **summary, **run_info}
        suffix = " [SYNTHETIC DATA]" if meta["synthetic"] else ""

        def figures(folder):
            return analysis_targets.targets_figures(folder, arrays, results, rows, suffix=suffix)

        def tables(folder):
            analysis_targets.write_targets_csv(Path(folder) / "targets.csv", rows)

        return _write(
            run_dir,
            cfg,
            arrays,
            results,
            figures,
            "targets.npz",
            cfg.save_plots,
            write_arrays,
            meta,
            tables=tables,
        )


class Population:
    """The pipeline's general attack: members against non-members of one model, R times."""

    arrays_name = "population.npz"

    @staticmethod
    def plan(cfg, n_train):
        return PopulationPlan(cfg.seed, n_train, cfg.subset_size, cfg.batch_size)

    @staticmethod
    def jobs(cfg) -> list[Job]:
        return [Job(CALIBRATION, r, False) for r in range(cfg.repetitions)]

    @staticmethod
    def examples_per_model(cfg) -> float:
        return cfg.subset_size

    @staticmethod
    def arrays(cfg, plan, dataset, outputs: ModelOutputs) -> dict:
        n = cfg.subset_size
        jobs = Population.jobs(cfg)
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
            "model_used": analysis.finite_model(sel),
            "train_accuracy": sel.train_accuracy,
            "test_accuracy": sel.test_accuracy,
            "class_names": np.array(dataset.class_names),
            "synthetic": np.array(bool(dataset.synthetic)),
        }

    @staticmethod
    def write(run_dir, cfg, meta, arrays, run_info, *, write_arrays=True) -> dict:
        from jaxmia import analysis_population

        settings = Settings.from_config(cfg)
        results = {**meta, **analysis_population.population_results(arrays, settings), **run_info}
        suffix = " [SYNTHETIC DATA]" if meta["synthetic"] else ""

        def figures(folder):
            return analysis_population.population_figures(folder, arrays, results, suffix=suffix)

        return _write(
            run_dir,
            cfg,
            arrays,
            results,
            figures,
            "population.npz",
            cfg.save_plots,
            write_arrays,
            meta,
        )


def metadata(cfg, synthetic: bool) -> dict:
    """The results.json keys that describe the experiment (not computed from outputs)."""
    meta = {"experiment": cfg.experiment, "dataset": cfg.dataset, "synthetic": bool(synthetic)}
    keys = {
        "single_target": (
            "target_index",
            "n_iterations",
            "eval_pairs",
            "subset_size",
            "epochs",
            "seed",
        ),
        "targets": ("n_models", "eval_models", "inclusion", "subset_size", "epochs", "seed"),
        "population": ("repetitions", "subset_size", "epochs", "seed"),
    }[cfg.experiment]
    return {**meta, **{k: getattr(cfg, k) for k in keys}}
