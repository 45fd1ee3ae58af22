"""The PyTorch pipeline's experiment, model after model: the baseline jaxmia is measured against.

    python benchmarks/pytorch_baseline.py --config configs/bench_cpu.yaml --mode tuned

It reads jaxmia's YAML configs and trains the same jobs as jaxmia (the round plan
comes from ``jaxmia.kinds.single_target.plan``, so both train on identical index
sets), with the same network (``model:``: the CNN, WRN-28-2 or ResNet-9, each a
torch twin of jaxmia/models/ with the same initialisation scheme and BatchNorm
settings), the same optimizer (``torch.optim.SGD``, whose formula jaxmia follows,
Nesterov included), the same learning-rate schedule (jaxmia's, per step), label
smoothing, augmentation (``augment:``, drawn from a torch generator by the same
law) and per-channel normalisation.  What differs is only how the work is
organised:

* ``seed``:  a ``Dataset`` whose ``__getitem__`` turns one uint8 image into a
  normalised tensor, and a ``DataLoader(shuffle=True, num_workers=0)``, as the
  PyTorch pipeline does.
* ``tuned``: the whole data set as one normalised float tensor in memory
  (channels_last, which was faster on CPU), all cores, batches gathered with
  index tensors, no DataLoader.  The headline
  speed-up is measured against this one.
* ``func``:  ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``
  over a chunk of models (PyTorch's model-ensembling recipe), each model with its
  own batches, and an SGD-momentum update written in torch ops (the CNN with
  the seed's recipe only: no BatchNorm buffers, schedule or augmentation).
* ``opacus``: DP-SGD with Opacus (``GradSampleModule`` + ``DPOptimizer``), model
  after model, for a config with ``dp:``: the tuned mode's tensors, Poisson
  sampling at jaxmia's q for jaxmia's steps, each model at jaxmia's sigma
  (privacy.noise_multipliers), clipping to C, noise sigma*C, the noisy sum
  divided by the expected batch size.  The DP peer of jaxmia's DP-SGD
  (``pip install opacus``; the harness's ``pytorch-opacus``).

Each model's data order comes from a torch generator seeded from
(seed, stream, round, member), its initial weights from another one and its
augmentation from a third, so the modes train the same models in the same order
(up to floating-point rounding); jaxmia draws its own init, order and
augmentation from the same tuple with JAX's generator, so it matches the
baseline in distribution, not model by model.

Outputs, in ``<output-dir>/<run-name>-torch-<mode>/``: results.json and losses.npz
with jaxmia's keys and arrays, plus the baseline's implementation and timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from jaxmia import privacy
from jaxmia.config import Config
from jaxmia.errors import NonFiniteLoss, UserError
from jaxmia.kinds import format_summary
from jaxmia.kinds.base import metadata, write_run
from jaxmia.kinds.single_target.plan import (
    calibration_jobs,
    evaluation_jobs,
    job_rows,
    resolve_target,
    steps_per_epoch,
)
from jaxmia.runs import products
from jaxmia.runs.outputs import ModelOutputs
from jaxmia.runs.plan import Job

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # the CLI says how to install it; tests skip
    torch = None

MODES = ("seed", "tuned", "func")  # the non-private modes
DP_MODES = ("opacus",)  # modes for a config with dp:
ALL_MODES = MODES + DP_MODES
AUTO_MODELS_PER_CHUNK = 8
_INIT, _ORDER, _AUGMENT = 0, 1, 2  # the purposes a job's seeds are drawn for
CROP_PAD = 4  # jaxmia.training.augment.CROP_PAD


# --------------------------------------------------------------------------
# The plan: which models, on which points, from which seeds.


def all_jobs(cfg: Config) -> list[Job]:
    """The jobs of a run in jaxmia's order: calibration rounds, then evaluation pairs."""
    return calibration_jobs(cfg.n_iterations) + evaluation_jobs(cfg.eval_pairs)


def training_sets(cfg: Config, jobs: list[Job], n_train: int, target: int) -> list[np.ndarray]:
    """int64[n + member] per job: the training indices, target first in an IN model's set.

    These are exactly the real (unmasked) slots of jaxmia's ``job_rows``.
    """
    idx, mask, _ = job_rows(
        jobs,
        seed=cfg.seed,
        n_train=n_train,
        target=target,
        subset_size=cfg.subset_size,
        batch_size=cfg.batch_size,
    )
    return [row[keep].astype(np.int64) for row, keep in zip(idx, mask, strict=True)]


def job_seed(seed: int, job: Job, purpose: int) -> int:
    """A 63-bit torch seed from (seed, stream, round, member, purpose) alone."""
    ss = np.random.SeedSequence([seed, job.stream, job.round, int(job.member), purpose])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


# --------------------------------------------------------------------------
# The models (torch twins of jaxmia/models/) and the optimizer.


def build_cnn(num_classes: int) -> nn.Module:
    """The pipeline's small CNN; float32[B, 3, 32, 32] -> logits float32[B, num_classes]."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


if torch is not None:

    class FlaxBatchNorm2d(nn.BatchNorm2d):
        """torch's BatchNorm2d with jaxmia's (Flax's) running variance.

        jaxmia's momentum 0.9 is torch's 0.1 and its eps is torch's; one
        difference is left: torch moves ``running_var`` with the unbiased batch
        variance (n/(n-1) of the biased one that both normalise with), Flax with
        the biased one.  After torch's update this takes back the extra
        momentum * var / (n - 1), so the running averages agree to rounding.
        The corrected average is a new tensor, not an in-place change: oneDNN's
        channels_last kernel keeps the running variance for its backward pass.
        """

        def __init__(self, channels: int, momentum: float = 0.9, eps: float = 1e-5):
            super().__init__(channels, eps=eps, momentum=1.0 - momentum)

        def forward(self, x):
            if not self.training:
                return super().forward(x)
            old = self.running_var.clone()
            y = super().forward(x)
            n = x.numel() // x.size(1)
            with torch.no_grad():
                moved = self.running_var - (1.0 - self.momentum) * old  # momentum * unbiased
                self.running_var = self.running_var - moved / n
            return y

    class WideResNet(nn.Module):
        """jaxmia.models.wrn.WideResNet in torch: layers named as jaxmia's parameter tree."""

        def __init__(self, num_classes: int, depth: int = 28, width: int = 2):
            super().__init__()
            n = (depth - 4) // 6
            layers = {"conv": nn.Conv2d(3, 16, 3, padding=1, bias=False)}
            self.blocks = []
            cin = 16
            for g, features in enumerate((16 * width, 32 * width, 64 * width)):
                for b in range(n):
                    stride, name = (2 if g > 0 and b == 0 else 1), f"g{g}b{b}"
                    layers[f"{name}_bn1"] = FlaxBatchNorm2d(cin)
                    layers[f"{name}_conv1"] = nn.Conv2d(
                        cin, features, 3, stride=stride, padding=1, bias=False
                    )
                    layers[f"{name}_bn2"] = FlaxBatchNorm2d(features)
                    layers[f"{name}_conv2"] = nn.Conv2d(
                        features, features, 3, padding=1, bias=False
                    )
                    proj = cin != features or stride != 1
                    if proj:
                        layers[f"{name}_proj"] = nn.Conv2d(
                            cin, features, 1, stride=stride, bias=False
                        )
                    self.blocks.append((name, proj))
                    cin = features
            layers["bn"] = FlaxBatchNorm2d(cin)
            layers["fc"] = nn.Linear(cin, num_classes)
            self.layers = nn.ModuleDict(layers)
            with torch.no_grad():  # jaxmia.models.wrn's initialisers
                for layer in self.layers.values():
                    if isinstance(layer, nn.Conv2d):
                        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                fc = self.layers["fc"]
                # variance_scaling(1, fan_avg, truncated_normal): truncated at 2 std,
                # the std divided by the truncation's 0.8796 so the variance is 1/fan_avg.
                std = (2.0 / (fc.in_features + fc.out_features)) ** 0.5 / 0.87962566103423978
                nn.init.trunc_normal_(fc.weight, 0.0, std, -2 * std, 2 * std)
                nn.init.zeros_(fc.bias)

        def forward(self, x):
            lay = self.layers
            x = lay["conv"](x)
            for name, proj in self.blocks:
                o1 = F.relu(lay[f"{name}_bn1"](x))
                y = F.relu(lay[f"{name}_bn2"](lay[f"{name}_conv1"](o1)))
                y = lay[f"{name}_conv2"](y)
                x = (lay[f"{name}_proj"](o1) if proj else x) + y
            x = F.relu(lay["bn"](x)).mean((2, 3))
            return lay["fc"](x)

    class ResNet9(nn.Module):
        """jaxmia.models.resnet9.ResNet9 in torch: layers named as jaxmia's parameter tree.

        PyTorch's default initialisation, as jaxmia's twin copies it.
        """

        STAGES = (
            ("prep", 1),
            ("layer1", 2),
            ("res1a", 2),
            ("res1b", 2),
            ("layer2", 4),
            ("layer3", 8),
            ("res3a", 8),
            ("res3b", 8),
        )

        def __init__(self, num_classes: int, width: int = 64):
            super().__init__()
            layers, cin = {}, 3
            for name, mult in self.STAGES:
                layers[f"{name}_conv"] = nn.Conv2d(cin, mult * width, 3, padding=1, bias=False)
                layers[f"{name}_bn"] = FlaxBatchNorm2d(mult * width)
                cin = mult * width
            layers["fc"] = nn.Linear(cin, num_classes, bias=False)
            self.layers = nn.ModuleDict(layers)

        def conv_bn(self, name, x):
            return F.relu(self.layers[f"{name}_bn"](self.layers[f"{name}_conv"](x)))

        def forward(self, x):
            x = F.max_pool2d(self.conv_bn("layer1", self.conv_bn("prep", x)), 2)
            x = x + self.conv_bn("res1b", self.conv_bn("res1a", x))
            x = F.max_pool2d(self.conv_bn("layer2", x), 2)
            x = F.max_pool2d(self.conv_bn("layer3", x), 2)
            x = x + self.conv_bn("res3b", self.conv_bn("res3a", x))
            return self.layers["fc"](x.amax((2, 3))) * 0.125  # jaxmia's LOGIT_SCALE


# jaxmia's builders (jaxmia.models.MODELS[...].builder) and their torch twins.
TWINS = {
    "jaxmia.models.cnn:SmallCNN": lambda num_classes: build_cnn(num_classes),
    "jaxmia.models.wrn:WideResNet": lambda num_classes, **kw: WideResNet(num_classes, **kw),
    "jaxmia.models.resnet9:ResNet9": lambda num_classes, **kw: ResNet9(num_classes, **kw),
}


def build_model(model: str, num_classes: int) -> nn.Module:
    """The torch twin of jaxmia's ``model`` (a name in jaxmia.models.MODELS), its options
    included; UserError for a model without one."""
    from jaxmia.models import MODELS

    spec = MODELS[model]
    if spec.builder not in TWINS:
        raise UserError(f"the baseline has no torch twin of model: {model} ({spec.builder})")
    return TWINS[spec.builder](num_classes, **dict(spec.options))


def init_model(model: str, num_classes: int, seed: int) -> nn.Module:
    """The twin of ``model`` with its initialisation scheme, drawn from ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model, num_classes)


def load_flax_variables(module: nn.Module, variables: dict) -> None:
    """Copies jaxmia's parameters and batch statistics into a twin whose layers are named as
    they are (``WideResNet``, ``ResNet9``): conv kernels HWIO -> OIHW, dense [in, out] ->
    [out, in], BatchNorm scale/bias/mean/var -> weight/bias/running_mean/running_var."""
    names = {"kernel": "weight", "scale": "weight", "bias": "bias"}
    names_stats = {"mean": "running_mean", "var": "running_var"}
    state = {}
    for collection, rename in (("params", names), ("batch_stats", names_stats)):
        for layer, leaves in (variables.get(collection) or {}).items():
            for leaf, value in leaves.items():
                a = torch.from_numpy(np.array(value, np.float32))
                if a.ndim == 4:
                    a = a.permute(3, 2, 0, 1)
                elif a.ndim == 2:
                    a = a.T
                state[f"layers.{layer}.{rename[leaf]}"] = a.contiguous()
    missing = module.load_state_dict(state, strict=False)
    left = [k for k in missing.missing_keys if not k.endswith("num_batches_tracked")]
    if left or missing.unexpected_keys:
        raise ValueError(f"not a twin: missing {left}, unexpected {missing.unexpected_keys}")


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def make_sgd(cfg: Config, params) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
    )


def step_rates(cfg: Config, steps_per_epoch: int) -> np.ndarray | None:
    """float64[epochs * steps_per_epoch]: jaxmia's learning rate at each global step
    (jaxmia.training.setup.lr_schedule), or None for the constant ``cfg.lr``."""
    from jaxmia.training.setup import lr_schedule

    schedule = lr_schedule(cfg.lr_schedule, cfg.lr, cfg.warmup_epochs, cfg.epochs, steps_per_epoch)
    if schedule is None:
        return None
    return np.asarray(schedule(np.arange(cfg.epochs * steps_per_epoch)), np.float64)


def augment_batch(x: torch.Tensor, kind: str, flip, offsets) -> torch.Tensor:
    """jaxmia.training.augment.apply on float[B, C, H, W]: the crop at ``offsets`` (int64[B, 2],
    (dy, dx) into the image reflect-padded by 4) and the mirror where ``flip`` (bool[B])."""
    if kind == "none":
        return x
    b, c, h, w = x.shape
    dev = x.device
    if kind == "flip_crop":
        padded = F.pad(x, (CROP_PAD,) * 4, mode="reflect")
        offsets = offsets.to(dev)
        rows = (offsets[:, 0, None] + torch.arange(h, device=dev)).view(b, 1, h, 1)
        cols = (offsets[:, 1, None] + torch.arange(w, device=dev)).view(b, 1, 1, w)
        batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
        x = padded[batch, torch.arange(c, device=dev).view(1, c, 1, 1), rows, cols]
    return torch.where(flip.to(dev).view(b, 1, 1, 1), x.flip(3), x)


def draw_augmentation(kind: str, batch: int, g: torch.Generator):
    """(flip bool[B], offsets int64[B, 2]) by jaxmia's law (training/augment.py), from ``g``."""
    flip = torch.rand(batch, generator=g) < 0.5
    if kind == "flip_crop":
        offsets = torch.randint(0, 2 * CROP_PAD + 1, (batch, 2), generator=g)
    else:
        offsets = torch.full((batch, 2), CROP_PAD)
    return flip, offsets


def order_generator(cfg: Config, job: Job) -> torch.Generator:
    """The job's shuffling generator; ``epoch_permutation`` draws each epoch's order from it."""
    return torch.Generator().manual_seed(job_seed(cfg.seed, job, _ORDER))


def epoch_permutation(g: torch.Generator, n: int) -> torch.Tensor:
    """int64[n]: one epoch's order, the one ``DataLoader(shuffle=True, generator=g)`` yields.

    Iterating such a DataLoader first draws one int64 from ``g`` (the workers'
    base seed), then runs a RandomSampler on ``g`` to the end (which draws more
    than the one ``randperm``).  Doing exactly that here keeps the seed, tuned and
    func modes on one batch order, so they train the same models.
    """
    from torch.utils.data import RandomSampler

    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.tensor(list(RandomSampler(range(n), generator=g)), dtype=torch.int64)


# --------------------------------------------------------------------------
# Data.


def normalise(images: np.ndarray, mean, std, channels_last: bool = False) -> torch.Tensor:
    """uint8[N, 32, 32, 3] -> float32[N, 3, 32, 32], (x / 255 - mean) / std per channel.

    Normalised in place in NHWC order; the NCHW view of that is already
    channels_last, so only the contiguous layout costs a copy.
    """
    x = torch.from_numpy(np.array(images, np.uint8)).float()  # one float copy, NHWC
    x.div_(255.0).sub_(torch.tensor(np.asarray(mean, np.float32)))
    x.div_(torch.tensor(np.asarray(std, np.float32)))
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def n_test_used(cfg: Config, dataset) -> int:
    n = len(dataset.test_labels)
    return n if cfg.test_samples is None else min(cfg.test_samples, n)


class TensorData:
    """The data set as tensors on one device (tuned and func modes)."""

    def __init__(self, cfg: Config, dataset, device: torch.device, channels_last: bool):
        n_test = n_test_used(cfg, dataset)
        norm = (dataset.mean, dataset.std, channels_last)
        self.x = normalise(dataset.train_images, *norm).to(device)
        self.y = torch.tensor(np.asarray(dataset.train_labels, np.int64), device=device)
        self.test_x = normalise(dataset.test_images[:n_test], *norm).to(device)
        test_y = np.asarray(dataset.test_labels[:n_test], np.int64)
        self.test_y = torch.tensor(test_y, device=device)


if torch is not None:

    class ImageDataset(torch.utils.data.Dataset):
        """Per-example dataset of the PyTorch pipeline: uint8 HWC image -> normalised CHW tensor.

        The transform is torchvision's ToTensor + Normalize, written in torch.
        """

        def __init__(self, images, labels, indices, mean, std):
            self.images = images
            self.labels = labels
            self.indices = np.asarray(indices, np.int64)
            self.mean = torch.tensor(np.asarray(mean, np.float32)).view(3, 1, 1)
            self.std = torch.tensor(np.asarray(std, np.float32)).view(3, 1, 1)

        def __len__(self):
            return len(self.indices)

        def __getitem__(self, i):
            j = self.indices[i]
            x = torch.tensor(self.images[j]).permute(2, 0, 1).float().div(255.0)
            return (x - self.mean) / self.std, int(self.labels[j])


# --------------------------------------------------------------------------
# One model at a time (seed and tuned modes).


def sgd_step(cfg, model, opt, x, y, lr=None) -> torch.Tensor:
    """One training step on the batch (x, y): mean (label-smoothed) CE, backward, SGD at
    rate ``lr`` (None: the optimizer's own); returns the loss, detached."""
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = float(lr)
    loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def fit_tuned(
    cfg, model, data: TensorData, rows: np.ndarray, orders, steps_per_epoch: int, augment=None
) -> list[float]:
    """Trains one model in place; returns the mean training loss of each epoch.

    ``orders`` yields, per epoch, a permutation (int64 tensor) of ``rows``'
    positions; batches are consecutive slices of batch_size, the last one
    partial.  Step s of epoch e takes jaxmia's rate of global step
    e * steps_per_epoch + s.  ``augment(e, s, n)`` gives a batch of n its
    (flip, offsets) (``draw_augmentation``'s layout); needed unless cfg.augment
    is none.
    """
    opt = make_sgd(cfg, model.parameters())
    rates = step_rates(cfg, steps_per_epoch)
    rows_t = torch.as_tensor(rows, device=data.x.device)
    b = cfg.batch_size
    # The augmented batch back in the data's layout (channels_last in tuned mode).
    cl = data.x.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if cl else torch.contiguous_format
    epoch_loss = []
    model.train()
    for e, perm in enumerate(orders):
        order = rows_t[perm.to(rows_t.device)]
        total = torch.zeros((), device=data.x.device)
        for s, start in enumerate(range(0, len(order), b)):
            batch = order[start : start + b]
            x = data.x[batch]
            if cfg.augment != "none":
                x = augment_batch(x, cfg.augment, *augment(e, s, len(batch)))
                x = x.contiguous(memory_format=layout)
            lr = None if rates is None else rates[e * steps_per_epoch + s]
            total += sgd_step(cfg, model, opt, x, data.y[batch], lr) * len(batch)
        epoch_loss.append(float(total) / len(order))
    return epoch_loss


def job_augmentation(cfg, job: Job):
    """The baseline's own augmentation of a job: draws from a generator seeded by the job."""
    g = torch.Generator().manual_seed(job_seed(cfg.seed, job, _AUGMENT))
    return lambda epoch, step, n: draw_augmentation(cfg.augment, n, g)


def _hits(model, x, y, eval_batch: int) -> int:
    hits = 0
    for s in range(0, len(y), eval_batch):
        hits += int((model(x[s : s + eval_batch]).argmax(1) == y[s : s + eval_batch]).sum())
    return hits


def evaluate_tuned(model, data: TensorData, rows: np.ndarray, target: int, eval_batch: int):
    """(x's CE loss, x's logits, accuracy on its own training set, accuracy on the test images)."""
    model.eval()
    with torch.no_grad():
        t = torch.tensor([target], device=data.x.device)
        logits = model(data.x[t])
        target_loss = float(F.cross_entropy(logits, data.y[t]))
        rows_t = torch.as_tensor(rows, device=data.x.device)
        train_acc = _hits(model, data.x[rows_t], data.y[rows_t], eval_batch) / len(rows)
        test_acc = _hits(model, data.test_x, data.test_y, eval_batch) / max(len(data.test_y), 1)
    return target_loss, logits[0].cpu().numpy(), train_acc, test_acc


def run_tuned(cfg, data: TensorData, jobs, sets, target, device, channels_last=True):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    eval_batch = max(cfg.batch_size, 500)
    steps = steps_per_epoch(cfg.subset_size, cfg.batch_size)
    out = {}
    for job, rows in zip(jobs, sets, strict=True):
        model = init_model(cfg.model, cfg.num_classes, job_seed(cfg.seed, job, _INIT))
        model = model.to(device, memory_format=fmt)
        g = order_generator(cfg, job)
        orders = (epoch_permutation(g, len(rows)) for _ in range(cfg.epochs))
        epoch_loss = fit_tuned(cfg, model, data, rows, orders, steps, job_augmentation(cfg, job))
        loss, logits, train_acc, test_acc = evaluate_tuned(model, data, rows, target, eval_batch)
        out[job] = _job_result(loss, logits, train_acc, test_acc, epoch_loss)
    return out


def run_seed(cfg, dataset, jobs, sets, target, device):
    """The PyTorch pipeline's way: per-example transforms and a DataLoader per model."""
    from torch.utils.data import DataLoader

    images = np.asarray(dataset.train_images)
    labels = np.asarray(dataset.train_labels)
    n_test = n_test_used(cfg, dataset)
    test_set = ImageDataset(
        dataset.test_images, dataset.test_labels, np.arange(n_test), dataset.mean, dataset.std
    )
    steps = steps_per_epoch(cfg.subset_size, cfg.batch_size)
    rates = step_rates(cfg, steps)
    out = {}
    for job, rows in zip(jobs, sets, strict=True):
        model = init_model(cfg.model, cfg.num_classes, job_seed(cfg.seed, job, _INIT)).to(device)
        opt = make_sgd(cfg, model.parameters())
        augment = job_augmentation(cfg, job)
        train_set = ImageDataset(images, labels, rows, dataset.mean, dataset.std)
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=0,
            generator=order_generator(cfg, job),
        )
        epoch_loss = []
        for e in range(cfg.epochs):
            model.train()
            total, count = 0.0, 0
            for s, (x, y) in enumerate(loader):
                x, y = x.to(device), y.to(device)
                if cfg.augment != "none":
                    x = augment_batch(x, cfg.augment, *augment(e, s, len(y)))
                lr = None if rates is None else rates[e * steps + s]
                total += sgd_step(cfg, model, opt, x, y, lr).item() * len(y)
                count += len(y)
            epoch_loss.append(total / count)
        model.eval()
        with torch.no_grad():
            x, y = ImageDataset(images, labels, [target], dataset.mean, dataset.std)[0]
            logits = model(x[None].to(device))
            target_loss = float(F.cross_entropy(logits, torch.tensor([y], device=device)))

            train_acc = _loader_accuracy(model, train_set, cfg.batch_size, device)
            test_acc = _loader_accuracy(model, test_set, cfg.batch_size, device)
        out[job] = _job_result(
            target_loss, logits[0].cpu().numpy(), train_acc, test_acc, epoch_loss
        )
    return out


def _loader_accuracy(model, ds, batch_size: int, device) -> float:
    from torch.utils.data import DataLoader

    hits = 0
    for xb, yb in DataLoader(ds, batch_size=batch_size, shuffle=False):
        hits += int((model(xb.to(device)).argmax(1).cpu() == yb).sum())
    return hits / max(len(ds), 1)


def _job_result(target_loss, logits, train_acc, test_acc, epoch_loss) -> dict:
    return {
        "target_loss": np.float32(target_loss),
        "logits": np.asarray(logits, np.float32),
        "train_accuracy": np.float32(train_acc),
        "test_accuracy": np.float32(test_acc),
        "epoch_loss": np.asarray(epoch_loss, np.float32),
    }


# --------------------------------------------------------------------------
# DP-SGD with Opacus, model after model (opacus mode).


def run_opacus(cfg, data: TensorData, jobs, sets, target, device):
    """Each job trained with Opacus's DP-SGD at jaxmia's mechanism (privacy.mechanism).

    Poisson sampling with the job's order generator: each step takes every real
    example with probability q, for ceil(n / B) steps per epoch.  An empty sample
    (probability (1 - q)^n per step, e^-B at most) is skipped: Opacus cannot
    hook a batch of none.
    """
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    mech = privacy.mechanism(cfg)
    if mech is None:
        raise UserError("--mode opacus trains DP-SGD: the config needs a dp: section")
    sigmas = privacy.noise_multipliers(cfg, jobs)
    eval_batch = max(cfg.batch_size, 500)
    out = {}
    for job, rows, sigma in zip(jobs, sets, sigmas.tolist(), strict=True):
        model = init_model(cfg.num_classes, job_seed(cfg.seed, job, _INIT)).to(device)
        gsm = GradSampleModule(model, loss_reduction="mean")
        opt = DPOptimizer(
            make_sgd(cfg, gsm.parameters()),
            noise_multiplier=float(sigma),
            max_grad_norm=mech.l2_clip,
            expected_batch_size=mech.batch_size,
            loss_reduction="mean",
        )
        g = order_generator(cfg, job)
        rows_t = torch.as_tensor(rows, device=data.x.device)
        epoch_loss = []
        gsm.train()
        for _ in range(cfg.epochs):
            total, seen = 0.0, 0
            for _ in range(mech.steps_per_epoch):
                take = torch.rand(len(rows), generator=g) < mech.sampling_rate
                batch = rows_t[take.to(rows_t.device)]
                if len(batch) == 0:
                    continue
                loss = F.cross_entropy(gsm(data.x[batch]), data.y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
            epoch_loss.append(total / max(seen, 1))
        loss, logits, train_acc, test_acc = evaluate_tuned(model, data, rows, target, eval_batch)
        out[job] = _job_result(loss, logits, train_acc, test_acc, epoch_loss)
    return out


# --------------------------------------------------------------------------
# A chunk of models at once with torch.func (func mode).


def _padded_orders(sets, gens, slots: int):
    """Per model, this epoch's shuffled rows padded to ``slots``: (idx int64[K, S], mask bool)."""
    k = len(sets)
    idx = torch.zeros((k, slots), dtype=torch.int64)
    mask = torch.zeros((k, slots), dtype=torch.bool)
    for i, (rows, g) in enumerate(zip(sets, gens, strict=True)):
        perm = epoch_permutation(g, len(rows))
        idx[i, : len(rows)] = torch.as_tensor(rows)[perm]
        mask[i, : len(rows)] = True
    return idx, mask


def run_func(cfg, data: TensorData, jobs, sets, target, device, models_per_chunk):
    """Trains the jobs models_per_chunk at a time, vmapped, with a functional SGD-momentum.

    Every model of a chunk takes steps_per_epoch steps of batch_size slots; the
    slots past its own examples are masked out of the batch mean, and a batch
    with no real example leaves its weights and momentum untouched, so each
    model follows exactly the updates torch.optim.SGD would make on its own.
    """
    from torch.func import functional_call, grad, stack_module_state, vmap

    b = cfg.batch_size
    steps = steps_per_epoch(cfg.subset_size, b)
    eval_batch = max(b, 250)
    base = build_cnn(cfg.num_classes).to("meta")
    lr, mom, wd = cfg.lr, cfg.momentum, cfg.weight_decay

    def loss_fn(params, x, y, m):
        logits = functional_call(base, params, (x,))
        ce = F.cross_entropy(logits, y, reduction="none")
        count = m.sum()
        loss = torch.where(m, ce, torch.zeros_like(ce)).sum() / count.clamp(min=1)
        return loss, (loss.detach(), count)

    grad_all = vmap(grad(loss_fn, has_aux=True))
    predict_shared = vmap(lambda p, x: functional_call(base, p, (x,)), in_dims=(0, None))
    predict_own = vmap(lambda p, x: functional_call(base, p, (x,)))

    out = {}
    for c in range(0, len(jobs), models_per_chunk):
        chunk, chunk_sets = jobs[c : c + models_per_chunk], sets[c : c + models_per_chunk]
        k = len(chunk)
        models = [
            init_model(cfg.model, cfg.num_classes, job_seed(cfg.seed, j, _INIT)) for j in chunk
        ]
        params, _ = stack_module_state(models)
        params = {n: p.detach().to(device) for n, p in params.items()}
        bufs = {n: torch.zeros_like(p) for n, p in params.items()}
        gens = [order_generator(cfg, j) for j in chunk]
        sizes = torch.tensor([len(s) for s in chunk_sets], dtype=torch.float32, device=device)
        epoch_losses = []
        for _ in range(cfg.epochs):
            idx, mask = _padded_orders(chunk_sets, gens, steps * b)
            idx, mask = idx.to(device), mask.to(device)
            total = torch.zeros(k, device=device)
            for s in range(steps):
                bi, bm = idx[:, s * b : (s + 1) * b], mask[:, s * b : (s + 1) * b]
                grads, (loss, count) = grad_all(params, data.x[bi], data.y[bi], bm)
                take = count > 0
                total += loss * count
                with torch.no_grad():
                    for n, p in params.items():
                        g = grads[n] + wd * p if wd else grads[n]
                        new_buf = mom * bufs[n] + g if mom else g
                        t = take.view(-1, *([1] * (p.dim() - 1)))
                        params[n] = torch.where(t, p - lr * new_buf, p)
                        bufs[n] = torch.where(t, new_buf, bufs[n])
            epoch_losses.append(total / sizes)
        with torch.no_grad():
            t = torch.tensor([target], device=device)
            logits = predict_shared(params, data.x[t])[:, 0]
            target_loss = F.cross_entropy(logits, data.y[t].expand(k), reduction="none")
            # Own training sets, padded to one length; padding counts as no hit.
            n_max = max(len(s) for s in chunk_sets)
            rows = torch.zeros((k, n_max), dtype=torch.int64)
            valid = torch.zeros((k, n_max), dtype=torch.bool)
            for i, s in enumerate(chunk_sets):
                rows[i, : len(s)] = torch.as_tensor(s)
                valid[i, : len(s)] = True
            rows, valid = rows.to(device), valid.to(device)
            train_hits = torch.zeros(k, device=device)
            for s in range(0, n_max, eval_batch):
                r, v = rows[:, s : s + eval_batch], valid[:, s : s + eval_batch]
                pred = predict_own(params, data.x[r]).argmax(-1)
                train_hits += ((pred == data.y[r]) & v).sum(1)
            test_hits = torch.zeros(k, device=device)
            for s in range(0, len(data.test_y), eval_batch):
                pred = predict_shared(params, data.test_x[s : s + eval_batch]).argmax(-1)
                test_hits += (pred == data.test_y[s : s + eval_batch]).sum(1)
        train_acc = (train_hits / sizes).cpu().numpy()
        test_acc = (test_hits / max(len(data.test_y), 1)).cpu().numpy()
        per_epoch = torch.stack(epoch_losses, 1).cpu().numpy()
        target_loss = target_loss.cpu().numpy()
        logits = logits.cpu().numpy()
        for i, job in enumerate(chunk):
            out[job] = _job_result(
                target_loss[i], logits[i], train_acc[i], test_acc[i], per_epoch[i]
            )
    return out


# --------------------------------------------------------------------------
# The experiment.


def func_mode_supports(cfg: Config) -> bool:
    """Whether the func mode's hand-written SGD trains ``cfg``'s model and recipe."""
    return (
        cfg.model == "cnn"
        and cfg.augment == "none"
        and cfg.lr_schedule == "constant"
        and not (cfg.warmup_epochs or cfg.nesterov or cfg.label_smoothing)
    )


def resolve_models_per_chunk(cfg: Config) -> int:
    mpc = cfg.models_per_chunk
    return AUTO_MODELS_PER_CHUNK if mpc == "auto" else int(mpc)


def train_jobs(cfg, dataset, mode, jobs, target, device="cpu", channels_last=True):
    """Trains ``jobs`` in ``mode``; returns (results per job, seconds spent training).

    Like jaxmia's train_seconds, the time leaves out putting the data in place
    (here: the normalised tensors of tuned and func) and one-off start-up costs
    (here: torch.optim's lazy import of torch._dynamo on the first optimizer).
    """
    if mode not in ALL_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {ALL_MODES}")
    sets = training_sets(cfg, jobs, len(dataset.train_labels), target)
    dev = torch.device(device)
    make_sgd(cfg, [torch.zeros(1, requires_grad=True)])
    if mode != "seed":
        data = TensorData(cfg, dataset, dev, channels_last and mode == "tuned")
    t0 = time.perf_counter()
    if mode == "seed":
        done = run_seed(cfg, dataset, jobs, sets, target, dev)
    elif mode == "tuned":
        done = run_tuned(cfg, data, jobs, sets, target, dev, channels_last)
    elif mode == "opacus":
        done = run_opacus(cfg, data, jobs, sets, target, dev)
    else:
        done = run_func(cfg, data, jobs, sets, target, dev, resolve_models_per_chunk(cfg))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return done, time.perf_counter() - t0


def outputs_of(jobs, done: dict) -> ModelOutputs:
    """The per-job results as jaxmia's columnar record (the target is the one scored image)."""
    return ModelOutputs.for_jobs(
        jobs,
        loss=np.array([[done[j]["target_loss"]] for j in jobs], np.float32),
        logits=np.stack([done[j]["logits"][None] for j in jobs]),
        train_accuracy=np.array([done[j]["train_accuracy"] for j in jobs], np.float32),
        test_accuracy=np.array([done[j]["test_accuracy"] for j in jobs], np.float32),
        epoch_loss=np.stack([done[j]["epoch_loss"] for j in jobs]),
    )


def run_baseline(
    cfg: Config,
    dataset,
    mode: str,
    output_dir,
    *,
    max_jobs: int | None = None,
    device: str = "cpu",
    channels_last: bool = True,
    threads: int | None = None,
) -> dict:
    """Runs the experiment of ``cfg`` in ``mode`` and writes its products; returns results.json.

    With ``max_jobs`` only the first max_jobs jobs are trained (for timing):
    results.json then holds the timing and per-job losses but no statistics.
    """
    if mode not in ALL_MODES:
        raise UserError(f"--mode must be one of {', '.join(ALL_MODES)}; got {mode!r}")
    if mode == "func" and not func_mode_supports(cfg):
        raise UserError(
            "--mode func trains model: cnn with the seed's recipe only (no augment, "
            "lr_schedule constant without warm-up, no nesterov or label_smoothing)"
        )
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    cfg.check_against(n_train, n_test)
    target = resolve_target(cfg.target_index, cfg.seed, n_train)
    cfg = cfg.replace(target_index=target, save_plots=False)  # timing runs draw no figures
    if threads:
        torch.set_num_threads(threads)
    elif mode != "seed":  # seed keeps torch's default thread count, as the pipeline does
        torch.set_num_threads(os.cpu_count() or 1)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    jobs = all_jobs(cfg)
    complete = max_jobs is None or max_jobs >= len(jobs)
    if not complete:
        jobs = jobs[:max_jobs]
    # The models train on the canaries' labels (privacy.mislabel); the arrays record both.
    trained_on = privacy.mislabel(cfg, dataset)
    done, seconds = train_jobs(cfg, trained_on, mode, jobs, target, device, channels_last)

    outputs = outputs_of(jobs, done)
    ok = outputs.finite()
    if complete and cfg.on_nonfinite == "stop" and not ok.all():
        raise NonFiniteLoss(
            f"non-finite loss for {cfg.kind.describe_job(jobs[int(np.argmin(ok))])}"
        )
    sizes = [cfg.subset_size + int(j.member) for j in jobs]
    run_info = {
        "implementation": f"pytorch-{mode}",
        "compile_seconds": 0.0,
        "train_seconds": round(seconds, 3),
        "models_trained": len(jobs),
        "models_per_second": round(len(jobs) / seconds, 4),
        "image_steps_per_second": round(cfg.epochs * sum(sizes) / seconds, 1),
        "models_per_chunk": resolve_models_per_chunk(cfg) if mode == "func" else 1,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "channels_last": bool(channels_last and mode == "tuned"),
        "torch_version": torch.__version__,
        "peak_device_bytes": (int(torch.cuda.max_memory_allocated()) if device == "cuda" else None),
    }
    # Every model's raw results, in job order, beside jaxmia's own arrays.
    extra = {
        "job_stream": outputs.stream,
        "job_round": outputs.round,
        "job_member": outputs.member,
        "job_target_loss": outputs.target_loss,
        "job_epoch_loss": outputs.epoch_loss,
    }
    run_dir = Path(output_dir) / f"{cfg.run_name}-torch-{mode}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write results to {run_dir}: {e.strerror or e}") from None
    if not complete:  # timing only: the raw results, no statistics
        return products.write_products(
            run_dir,
            config=cfg.to_dict(),
            arrays={**extra, "synthetic": np.array(dataset.synthetic)},
            results={"dataset": cfg.dataset, "synthetic": dataset.synthetic, "partial": True}
            | run_info,
            figures=None,
            figure_files=cfg.kind.figure_files,
            synthetic=dataset.synthetic,
            arrays_name=cfg.kind.arrays_file,
        )
    # The same arrays, statistics and products as jaxmia's (jaxmia/kinds, runs/products.py).
    arrays = cfg.kind.arrays(cfg, None, dataset, outputs)
    meta = metadata(cfg.kind, cfg, dataset.synthetic, dataset.fingerprint)
    return write_run(cfg.kind, run_dir, cfg, meta, {**arrays, **extra}, run_info)


# --------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like jaxmia's CLI
        print(f"pytorch_baseline: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pytorch_baseline",
        description="jaxmia's experiment as the sequential PyTorch pipeline runs it.",
    )
    p.add_argument("--config", required=True, help="jaxmia YAML config")
    p.add_argument("--mode", default="tuned", choices=ALL_MODES)
    p.add_argument("--data-dir", default="./datasets")
    p.add_argument("--output-dir", default="./outputs")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument("--model", default=None, help="overrides the config's model")
    p.add_argument("--max-jobs", type=int, default=None, help="train only the first N models")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument(
        "--memory-format",
        default="channels_last",
        choices=("channels_last", "contiguous"),
        help="tuned mode's image layout (channels_last measured ~20%% faster on CPU)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jaxmia.config import load_config

    try:
        if torch is None:
            raise UserError("torch is not installed; pip install -e '.[bench]'")
        if args.seed is not None and args.seed < 0:
            raise UserError(f"--seed must be >= 0, got {args.seed}")
        if args.max_jobs is not None and args.max_jobs < 1:
            raise UserError(f"--max-jobs must be >= 1, got {args.max_jobs}")
        if args.threads is not None and args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise UserError(f"--device must be cpu, cuda or auto; got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: this torch build sees no CUDA device")
        cfg = load_config(args.config, seed=args.seed)
        if args.model is not None:
            cfg = cfg.replace(model=args.model)
        build_model(cfg.model, cfg.num_classes)  # UserError for a model without a twin
        from jaxmia.data import load_dataset

        dataset = load_dataset(cfg.dataset, args.data_dir, num_classes=cfg.num_classes)
        results = run_baseline(
            cfg,
            dataset,
            args.mode,
            args.output_dir,
            max_jobs=args.max_jobs,
            device=device,
            channels_last=args.memory_format == "channels_last",
            threads=args.threads,
        )
    except UserError as e:
        print(f"pytorch_baseline: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"pytorch_baseline: stopped: {e}", file=sys.stderr)
        return 1
    if not results.get("partial"):
        print(format_summary(results))
    rate = results["image_steps_per_second"]
    print(
        f"{results['implementation']}: {results['models_trained']} models in "
        f"{results['train_seconds']:.1f} s, {results['models_per_second']:.3f} models/s, "
        f"{rate:.0f} image-steps/s"
    )
    print(f"Outputs in {Path(args.output_dir) / f'{cfg.run_name}-torch-{args.mode}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
