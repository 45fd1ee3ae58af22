"""What trained models hand back: one columnar record per chunk, numpy only.

The trainer returns a ``ModelOutputs``, the run folder stores it as one chunk
file, and the assembly concatenates the chunks and looks models up by their
job.  Every array has the models axis first, so the same value travels from the
device to the disk to the statistics without being reshaped or re-keyed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmia.runs.plan import Job


@dataclasses.dataclass(frozen=True)
class ModelOutputs:
    """Per-model results of J trained models that each scored T images.

    ``loss`` and ``logits`` are those of the plan's scored images (the target,
    for the single-target experiment), after training: of the plain image, query
    0.  ``view_logits`` holds the other Q - 1 queries of a plan that scores
    augmented views (training/queries.py), Q - 1 = 0 for the others; a chunk
    written before it existed reads as Q = 1.
    """

    stream: np.ndarray  # int32[J]
    round: np.ndarray  # int64[J]
    member: np.ndarray  # bool[J]
    loss: np.ndarray  # float32[J, T]: cross-entropy of each scored image
    logits: np.ndarray  # float32[J, T, C]
    train_accuracy: np.ndarray  # float32[J]
    test_accuracy: np.ndarray  # float32[J]
    epoch_loss: np.ndarray  # float32[J, epochs]: mean training loss of each epoch
    view_logits: np.ndarray  # float32[J, T, Q-1, C]: queries 1 .. Q-1 of each scored image
    # Final parameters and batch statistics (BatchNorm's running averages; {}
    # for a model without) stacked [J, ...], only when the trainer was asked
    # for them (tests); never stored.
    params: dict | None = dataclasses.field(default=None, compare=False, repr=False)
    batch_stats: dict | None = dataclasses.field(default=None, compare=False, repr=False)

    _COLUMNS = (
        "stream",
        "round",
        "member",
        "loss",
        "logits",
        "train_accuracy",
        "test_accuracy",
        "epoch_loss",
        "view_logits",
    )
    # Columns older chunks lack, and how to fill them from the others.
    _OPTIONAL = ("view_logits",)
    _DTYPES = {
        "stream": np.int32,
        "round": np.int64,
        "member": np.bool_,
        "loss": np.float32,
        "logits": np.float32,
        "train_accuracy": np.float32,
        "test_accuracy": np.float32,
        "epoch_loss": np.float32,
        "view_logits": np.float32,
    }
    _NDIM = {"loss": 2, "logits": 3, "epoch_loss": 2, "view_logits": 4}

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The stored columns."""
        return cls._COLUMNS

    @property
    def target_loss(self) -> np.ndarray:
        """float32[J]: the loss of the first scored image (the target)."""
        return self.loss[:, 0]

    @property
    def target_logits(self) -> np.ndarray:
        """float32[J, C]: the logits of the first scored image (the target)."""
        return self.logits[:, 0]

    @classmethod
    def from_arrays(cls, arrays: dict) -> ModelOutputs:
        """Checks names, dtypes kinds and shapes; raises ValueError on anything off.

        A missing ``view_logits`` (a chunk of a run without query views, or
        from before they existed) is read as no views: float32[J, T, 0, C].
        """
        missing = [f for f in cls.fields() if f not in arrays and f not in cls._OPTIONAL]
        if missing:
            raise ValueError(f"missing fields {missing}")
        if "view_logits" not in arrays and np.ndim(arrays["logits"]) == 3:
            j, t, c = np.shape(arrays["logits"])
            arrays = {**arrays, "view_logits": np.zeros((j, t, 0, c), np.float32)}
        values = {}
        for name in cls.fields():
            a = np.asarray(arrays[name])
            want = np.dtype(cls._DTYPES[name])
            if a.dtype != want:
                raise ValueError(f"field {name} is {a.dtype}, expected {want}")
            if a.ndim != cls._NDIM.get(name, 1):
                raise ValueError(f"field {name} has {a.ndim} dimensions")
            values[name] = a
        n = len(values["stream"])
        for name, a in values.items():
            if a.shape[0] != n:
                raise ValueError(f"field {name} has {a.shape[0]} rows, expected {n}")
        if values["logits"].shape[:2] != values["loss"].shape:
            raise ValueError("logits and loss disagree on the scored images")
        v, z = values["view_logits"].shape, values["logits"].shape
        if v[:2] != z[:2] or v[3] != z[2]:
            raise ValueError("view_logits and logits disagree on the scored images or classes")
        return cls(**values)

    @classmethod
    def for_jobs(cls, jobs, params=None, batch_stats=None, **columns) -> ModelOutputs:
        """Builds the record of these jobs from per-model columns (padding rows dropped)."""
        n = len(jobs)
        keys = {
            "stream": np.array([j.stream for j in jobs], np.int32),
            "round": np.array([j.round for j in jobs], np.int64),
            "member": np.array([j.member for j in jobs], bool),
        }
        rest = {k: np.asarray(v, cls._DTYPES[k])[:n] for k, v in columns.items()}
        record = cls.from_arrays({**keys, **rest})
        return dataclasses.replace(record, params=params, batch_stats=batch_stats)

    @classmethod
    def concat(cls, parts) -> ModelOutputs | None:
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return None
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in cls.fields()})

    def finite(self) -> np.ndarray:
        """bool[J]: the model's every epoch loss, every scored loss and every view's logits
        are finite."""
        # all over every axis but the first: also for no models (a reshape to
        # (0, -1) cannot infer its -1)
        v = np.isfinite(self.view_logits)
        views = v.all(axis=tuple(range(1, v.ndim)))
        return np.isfinite(self.epoch_loss).all(axis=1) & np.isfinite(self.loss).all(axis=1) & views

    def trained_finite(self) -> np.ndarray:
        """bool[J]: every epoch loss of the model is finite: the part of ``finite`` the
        arrays files do not keep the values of (they keep the scored outputs)."""
        return np.isfinite(self.epoch_loss).all(axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.fields()}

    def __len__(self) -> int:
        return len(self.stream)

    def jobs(self) -> list[Job]:
        return [
            Job(int(s), int(r), bool(m))
            for s, r, m in zip(self.stream, self.round, self.member, strict=True)
        ]

    def take(self, rows) -> ModelOutputs:
        return ModelOutputs(**{f: getattr(self, f)[rows] for f in self.fields()})

    def index(self) -> dict[Job, int]:
        """Job -> row; a job that appears twice keeps its last row."""
        return {job: i for i, job in enumerate(self.jobs())}

    def select(self, jobs) -> ModelOutputs:
        """The rows of these jobs, in this order (KeyError for one that is missing)."""
        where = self.index()
        return self.take(np.array([where[j] for j in jobs], np.int64))
