"""Sequential tuned PyTorch reference for the jaxmia CNN (CPU).

    python benchmarks/explore/torch_tuned.py [--steps 40] [--reps 5] [--profile]

K models trained one after the other (plain loop), each on its own data order,
SGD momentum 0.9, B=64, data as one normalised float tensor in memory, batches
gathered with an index tensor.  Measures NCHW and channels_last, alternating,
and prints median image-steps/s.  --profile prints a torch.profiler op table.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pytorch_baseline import build_cnn  # noqa: E402

torch.set_num_threads(2)
K, B, N, STEPS = 8, 64, 4096, 40


def make_model():
    return build_cnn(100)  # the baseline's CNN


def run(data, labels, channels_last, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_all = (
        data.contiguous(memory_format=torch.channels_last) if channels_last else data.contiguous()
    )
    t0 = time.perf_counter()
    for m in range(K):
        torch.manual_seed(1000 + m)
        model = make_model()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        idx = torch.randint(0, data.shape[0], (steps, B), generator=g)
        for s in range(steps):
            xb = x_all[idx[s]]
            yb = labels[idx[s]]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
    dt = time.perf_counter() - t0
    return K * steps * B / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (N, 3, 32, 32), dtype=np.uint8)
    data = (torch.from_numpy(u8).float() / 255.0 - 0.5) / 0.25
    labels = torch.from_numpy(rng.integers(0, 100, N)).long()
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        for cl in (False, True):
            run(data, labels, cl, 5)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run(data, labels, cl, a.steps)
            print(f"=== channels_last={cl}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return
    run(data, labels, False, 5)
    run(data, labels, True, 5)  # warm-up
    res = {False: [], True: []}
    for r in range(a.reps):
        order = (False, True) if r % 2 == 0 else (True, False)
        for cl in order:
            res[cl].append(run(data, labels, cl, a.steps, seed=r))
    for cl in (False, True):
        v = res[cl]
        print(
            f"torch_tuned channels_last={cl}: median {statistics.median(v):.0f} img-steps/s  "
            f"runs={[round(x) for x in v]}"
        )


if __name__ == "__main__":
    main()
