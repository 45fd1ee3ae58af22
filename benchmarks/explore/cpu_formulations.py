"""How fast can JAX train a chunk of small CNNs on CPU?  Formulations compared.

    python benchmarks/explore/cpu_formulations.py                      # default set, driver
    python benchmarks/explore/cpu_formulations.py --variants a,b,c     # chosen variants
    python benchmarks/explore/cpu_formulations.py --list               # variant names
    python benchmarks/explore/cpu_formulations.py --check-only         # correctness only

K models (default 8), B=64, each model on its own data order, SGD momentum 0.9
(optax.sgd).  CNN: conv3x3 32 SAME, ReLU, maxpool2, conv3x3 64 SAME, ReLU,
maxpool2, flatten 4096, dense 512, ReLU, dense 100; softmax CE mean.  One jitted
call runs STEPS steps (lax.scan over steps), state donated.  Batches are gathered
on the device from a uint8 image array (``images[idx]``) and normalised.

A variant = (conv formulation, pool formulation, loop structure, env/XLA flags).
Variants that need different XLA_FLAGS / thread env run in their own subprocess
(the flags are read once at backend start).  Within a process the variants take
turns (alternating repetitions); medians are reported.

Correctness: every variant trains the same models from the same init on the same
indices; its per-model loss at the last of CHECK_STEPS steps must match the
``lax.conv`` reference within ~1e-4 relative (printed as ``maxrel``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

K_DEFAULT, B, H, NCLS, NIMG = 8, 64, 32, 100, 4096
MEAN = (0.507, 0.487, 0.441)
STD = (0.267, 0.256, 0.276)
FLOP_PER_IMG_STEP = 44.7e6

# --------------------------------------------------------------------------
# Variant table.  Keys: conv1/conv2 in {lax, im2col, acc, im2col_cf, lax_cf},
# pool in {reshape, rw, slices}, order in {relu_pool, pool_relu},
# loop in {vmap_in, map_in, mapbs<n>_in, unroll_in, map_out, mapbs<n>_out,
# unroll_out, vmap_out, shard_<inner>}, env: dict of env vars, dtype f32|bf16.

T1 = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    "OMP_NUM_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
}
DEV2 = "--xla_force_host_platform_device_count=2"


def V(**kw):
    d = dict(
        conv1="im2col",
        conv2="im2col",
        pool="reshape",
        order="relu_pool",
        loop="map_in",
        env={},
        dtype="f32",
    )
    d.update(kw)
    return d


VARIANTS = {
    # 1. baseline: vmap of lax.conv
    "laxconv_vmap_in": V(conv1="lax", conv2="lax", loop="vmap_in", steps=2),
    "laxconv_map_in": V(conv1="lax", conv2="lax", loop="map_in", steps=1),
    "laxconv_map_out": V(conv1="lax", conv2="lax", loop="map_out", steps=1),
    "laxconv_unroll_in": V(conv1="lax", conv2="lax", loop="unroll_in", steps=2),
    # 2./3. im2col under different loops
    "im2col_vmap_in": V(loop="vmap_in"),
    "im2col_map_in": V(loop="map_in"),
    "im2col_mapbs2_in": V(loop="mapbs2_in"),
    "im2col_mapbs4_in": V(loop="mapbs4_in"),
    "im2col_unroll_in": V(loop="unroll_in"),
    "im2col_map_out": V(loop="map_out"),
    "im2col_unroll_out": V(loop="unroll_out"),
    "im2col_vmap_out": V(loop="vmap_out"),
    # 6. layout / formulation details (on map_in)
    "acc_map_in": V(conv1="acc", conv2="acc"),
    "c1lax_c2im2col_map_in": V(conv1="lax"),
    "c1im2col_c2acc_map_in": V(conv2="acc"),
    "cf_map_in": V(conv1="im2col_cf", conv2="im2col_cf"),
    "laxcf_map_in": V(conv1="lax_cf", conv2="lax_cf"),
    "im2col_rw_map_in": V(pool="rw"),
    "im2col_slices_map_in": V(pool="slices"),
    "im2col_poolrelu_map_in": V(order="pool_relu"),
    "im2col_poolrelu_map_out": V(order="pool_relu", loop="map_out"),
    # 7. precision
    "im2col_bf16_map_in": V(dtype="bf16", steps=1),
    # 4. threads / devices
    "im2col_map_in_1thr": V(env=T1),
    "im2col_unroll_in_1thr": V(loop="unroll_in", env=T1),
    "shard_map_in": V(loop="shard_map_in", env={"XLA_FLAGS": DEV2}),
    "shard_map_out": V(loop="shard_map_out", env={"XLA_FLAGS": DEV2}),
    "shard_map_in_1thr": V(
        loop="shard_map_in", env={**T1, "XLA_FLAGS": DEV2 + " " + T1["XLA_FLAGS"]}
    ),
    "shard_map_out_1thr": V(
        loop="shard_map_out", env={**T1, "XLA_FLAGS": DEV2 + " " + T1["XLA_FLAGS"]}
    ),
    "shard_unroll_in_1thr": V(
        loop="shard_unroll_in", env={**T1, "XLA_FLAGS": DEV2 + " " + T1["XLA_FLAGS"]}
    ),
    # 5. XLA CPU flags
    "im2col_map_in_fastmath": V(env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}),
    "im2col_map_in_xnn": V(env={"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}),
    "im2col_map_in_ynn": V(
        env={"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"}
    ),
    "im2col_map_in_xnngraph": V(
        env={
            "XLA_FLAGS": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"
        }
    ),
    "im2col_map_in_onednn": V(env={"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
    "im2col_map_in_concsched": V(
        env={"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
    ),
    "im2col_unroll_in_concsched": V(
        loop="unroll_in", env={"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
    ),
}

DEFAULT_SET = [
    n for n in VARIANTS if n not in ("laxconv_map_in", "laxconv_map_out")
]  # 40 img-steps/s: run by hand


# --------------------------------------------------------------------------
# The model, written for one model.


def build(spec, K, steps):
    """Returns (train_fn, state0, idx, images, labels, mesh_or_None)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax import lax

    f32 = jnp.float32
    cdt = jnp.bfloat16 if spec["dtype"] == "bf16" else f32

    def mm(a, b):
        return jnp.dot(a.astype(cdt), b.astype(cdt), preferred_element_type=f32)

    # --- conv formulations, NHWC activations, HWIO weights -------------------
    def conv_lax(x, w):
        return lax.conv_general_dilated(
            x.astype(cdt),
            w.astype(cdt),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=f32,
        )

    def conv_im2col(x, w):
        b, h, wd, c = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate(
            [xp[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)], axis=-1
        )
        out = mm(patches.reshape(b * h * wd, 9 * c), w.reshape(9 * c, -1))
        return out.reshape(b, h, wd, -1)

    def conv_acc(x, w):
        b, h, wd, c = x.shape
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = 0.0
        for i in range(3):
            for j in range(3):
                out = out + mm(xp[:, i : i + h, j : j + wd, :].reshape(b * h * wd, c), w[i, j])
        return out.reshape(b, h, wd, -1)

    # channel-first (NCHW activations) ----------------------------------------
    def conv_im2col_cf(x, w):
        b, c, h, wd = x.shape
        xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        patches = jnp.concatenate(
            [xp[:, :, i : i + h, j : j + wd] for i in range(3) for j in range(3)], axis=1
        )
        wt = w.reshape(9 * c, -1).T  # [O, 9C], (i, j, c) order matches the concat
        out = jnp.einsum(
            "ok,bkp->bop",
            wt.astype(cdt),
            patches.reshape(b, 9 * c, h * wd).astype(cdt),
            preferred_element_type=f32,
        )
        return out.reshape(b, -1, h, wd)

    def conv_lax_cf(x, w):
        return lax.conv_general_dilated(
            x.astype(cdt),
            w.astype(cdt),
            (1, 1),
            "SAME",
            dimension_numbers=("NCHW", "HWIO", "NCHW"),
            preferred_element_type=f32,
        )

    CONV = {
        "lax": conv_lax,
        "im2col": conv_im2col,
        "acc": conv_acc,
        "im2col_cf": conv_im2col_cf,
        "lax_cf": conv_lax_cf,
    }
    cf = spec["conv1"].endswith("_cf")
    assert cf == spec["conv2"].endswith("_cf")
    sp = (2, 3) if cf else (1, 2)  # spatial axes

    def pool(x):
        if spec["pool"] == "rw":
            win = [1, 1, 1, 1]
            win[sp[0]] = win[sp[1]] = 2
            return lax.reduce_window(x, -jnp.inf, lax.max, win, win, "VALID")
        if spec["pool"] == "slices":

            def s(a, i, j):
                idx = [slice(None)] * 4
                idx[sp[0]] = slice(i, None, 2)
                idx[sp[1]] = slice(j, None, 2)
                return a[tuple(idx)]

            return jnp.maximum(
                jnp.maximum(s(x, 0, 0), s(x, 0, 1)), jnp.maximum(s(x, 1, 0), s(x, 1, 1))
            )
        if cf:
            b, c, h, w = x.shape
            return x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    def bias(x, bb):
        return x + (bb[None, :, None, None] if cf else bb)

    def block(x, w, bb, conv):
        y = bias(CONV[conv](x, w), bb)
        if spec["order"] == "pool_relu":
            return jax.nn.relu(pool(y))
        return pool(jax.nn.relu(y))

    def forward(p, x):
        w1, b1, w2, b2, w3, b3, w4, b4 = p
        x = block(x, w1, b1, spec["conv1"])
        x = block(x, w2, b2, spec["conv2"])
        if cf:
            x = jnp.transpose(x, (0, 2, 3, 1))  # flatten in NHWC order: same function
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(mm(x, w3) + b3)
        return mm(x, w4) + b4

    mean = jnp.array(MEAN, f32)
    std = jnp.array(STD, f32)
    tx = optax.sgd(0.01, momentum=0.9)

    def loss_fn(p, x, y):
        logits = forward(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step_one(images, labels, state, idx):
        """One model, one step.  state=(params, opt_state); idx int32[B]."""
        p, o = state
        x = (images[idx].astype(f32) / 255.0 - mean) / std
        if cf:
            x = jnp.transpose(x, (0, 3, 1, 2))
        y = labels[idx]
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        upd, o = tx.update(g, o, p)
        return (optax.apply_updates(p, upd), o), loss

    # --- loop structures ------------------------------------------------------
    def split(tree, k):
        return [jax.tree.map(lambda a, m=m: a[m], tree) for m in range(k)]

    def stack(trees):
        return jax.tree.map(lambda *a: jnp.stack(a), *trees)

    def make_loop(loop):
        """(images, labels, stacked state, idx int32[k, S, B]) -> (state, loss f32[k, S])."""

        def one_model_all_steps(images, labels, st, idx_m):  # idx_m [S, B]
            return lax.scan(lambda s, i: step_one(images, labels, s, i), st, idx_m)

        if loop == "vmap_in":

            def f(images, labels, st, idx):
                def body(s, i):  # i [k, B]
                    return jax.vmap(lambda a, b: step_one(images, labels, a, b))(s, i)

                st, losses = lax.scan(body, st, jnp.swapaxes(idx, 0, 1))
                return st, losses.T
        elif loop == "vmap_out":

            def f(images, labels, st, idx):
                return jax.vmap(lambda a, b: one_model_all_steps(images, labels, a, b))(st, idx)
        elif loop.endswith("_in") and loop.startswith("map"):
            bs = int(loop[5:-3]) if loop.startswith("mapbs") else None

            def f(images, labels, st, idx):
                def body(s, i):
                    return lax.map(
                        lambda a: step_one(images, labels, a[0], a[1]), (s, i), batch_size=bs
                    )

                st, losses = lax.scan(body, st, jnp.swapaxes(idx, 0, 1))
                return st, losses.T
        elif loop.endswith("_out") and loop.startswith("map"):
            bs = int(loop[5:-4]) if loop.startswith("mapbs") else None

            def f(images, labels, st, idx):
                return lax.map(
                    lambda a: one_model_all_steps(images, labels, a[0], a[1]),
                    (st, idx),
                    batch_size=bs,
                )
        elif loop == "unroll_in":

            def f(images, labels, st, idx):
                k = idx.shape[0]
                sts = split(st, k)

                def body(ss, i):
                    outs = [step_one(images, labels, ss[m], i[m]) for m in range(k)]
                    return [o[0] for o in outs], jnp.stack([o[1] for o in outs])

                sts, losses = lax.scan(body, sts, jnp.swapaxes(idx, 0, 1))
                return stack(sts), losses.T
        elif loop == "unroll_out":

            def f(images, labels, st, idx):
                k = idx.shape[0]
                outs = [
                    one_model_all_steps(images, labels, s, idx[m])
                    for m, s in enumerate(split(st, k))
                ]
                return stack([o[0] for o in outs]), jnp.stack([o[1] for o in outs])
        else:
            raise ValueError(loop)
        return f

    loop = spec["loop"]
    mesh = None
    if loop.startswith("shard_"):
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        try:
            shard_map = jax.shard_map
        except AttributeError:
            from jax.experimental.shard_map import shard_map
        devs = jax.devices()
        assert len(devs) >= 2, "shard variants need --xla_force_host_platform_device_count=2"
        mesh = Mesh(np.array(devs[:2]), ("m",))
        inner = make_loop(loop[len("shard_") :])
        f = shard_map(
            inner, mesh=mesh, in_specs=(P(), P(), P("m"), P("m")), out_specs=(P("m"), P("m"))
        )
    else:
        f = make_loop(loop)

    def train(state, idx, images, labels):
        return f(images, labels, state, idx)

    train_fn = jax.jit(train, donate_argnums=(0,))

    # --- data and init (PyTorch default init scheme; same numbers for every variant)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NIMG, H, H, 3), dtype=np.uint8)
    labels = rng.integers(0, NCLS, NIMG).astype(np.int32)
    idx = rng.integers(0, NIMG, (K, steps, B)).astype(np.int32)

    def uni(shape, fan_in):
        bnd = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bnd, bnd, (K,) + shape).astype(np.float32)

    params = (
        uni((3, 3, 3, 32), 27),
        uni((32,), 27),
        uni((3, 3, 32, 64), 288),
        uni((64,), 288),
        uni((4096, 512), 4096),
        uni((512,), 4096),
        uni((512, 100), 512),
        uni((100,), 512),
    )
    params = tuple(jnp.asarray(a) for a in params)
    opt = jax.vmap(tx.init)(params)
    state = (params, opt)
    images, labels, idx = jnp.asarray(images), jnp.asarray(labels), jnp.asarray(idx)
    if mesh is not None:
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        sh, rep = NamedSharding(mesh, P("m")), NamedSharding(mesh, P())
        state = jax.device_put(state, sh)
        idx = jax.device_put(idx, sh)
        images, labels = jax.device_put(images, rep), jax.device_put(labels, rep)
    return train_fn, state, idx, images, labels


# --------------------------------------------------------------------------
# Child: build, check, time the given variants (all with this process's env).


def child(names, K, steps, check_steps, reps, min_time):
    import jax
    import numpy as np

    out = {}
    runs = {}
    for n in names:
        spec = VARIANTS[n]
        # correctness: losses after check_steps from the common init
        fn, st, idx, im, lb = build(spec, K, check_steps)
        t0 = time.perf_counter()
        comp = fn.lower(st, idx, im, lb).compile()
        ctime_check = time.perf_counter() - t0
        p0 = [np.asarray(a[0]) for a in st[0]]  # model 0 init (before donation)
        st, out_l = comp(st, idx, im, lb)
        losses = np.asarray(out_l)
        p1 = [np.asarray(a[0]) for a in st[0]]
        # parameter change of model 0 (conv1, conv2, last dense): sensitive to the gradient
        delta = np.concatenate([(p1[i] - p0[i]).ravel() for i in (0, 2, 6)])
        steps_v = spec.get("steps", steps)
        # timing build
        fn, st, idx, im, lb = build(spec, K, steps_v)
        t0 = time.perf_counter()
        comp = fn.lower(st, idx, im, lb).compile()
        ctime = time.perf_counter() - t0
        st, out_l = comp(st, idx, im, lb)
        jax.block_until_ready(out_l)  # warm-up
        runs[n] = [comp, st, idx, im, lb, steps_v]
        out[n] = {
            "compile_s": ctime,
            "check_compile_s": ctime_check,
            "check_losses": losses[:, -1].tolist(),
            "check_delta": delta.tolist(),
            "times": [],
            "steps": steps_v,
        }
        print(
            f"[{n}] compiled in {ctime:.1f}s, check loss[-1] {losses[:, -1][:3]}",
            file=sys.stderr,
            flush=True,
        )
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            comp, st, idx, im, lb, steps_v = runs[n]
            n_calls, t_tot = 0, 0.0
            while t_tot < min_time or n_calls == 0:
                t0 = time.perf_counter()
                st, out_l = comp(st, idx, im, lb)
                jax.block_until_ready((st, out_l))
                t_tot += time.perf_counter() - t0
                n_calls += 1
            runs[n][1] = st
            out[n]["times"].append(K * steps_v * B * n_calls / t_tot)
            print(
                f"  rep {r} {n}: {out[n]['times'][-1]:.0f} img-steps/s", file=sys.stderr, flush=True
            )
    for n in names:
        out[n]["median"] = statistics.median(out[n]["times"]) if out[n]["times"] else 0.0
    print("RESULT_JSON " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------
# Driver: group variants by env, run each group in a subprocess.


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(DEFAULT_SET))
    ap.add_argument("--K", type=int, default=K_DEFAULT)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--check-steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--min-time", type=float, default=1.5, help="seconds per timed repetition (>=1 call)"
    )
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument(
        "--torch-ref", type=float, default=0.0, help="tuned torch img-steps/s for the ratio column"
    )
    a = ap.parse_args()
    names = [n for n in a.variants.split(",") if n]
    if a.list:
        print("\n".join(VARIANTS))
        return
    if a.check_only:
        a.reps, a.steps, a.min_time = 0, a.check_steps, 0
    if a.child:
        child(names, a.K, a.steps, a.check_steps, a.reps, a.min_time)
        return
    groups = {}
    for n in names:
        groups.setdefault(json.dumps(VARIANTS[n]["env"], sort_keys=True), []).append(n)
    results = {}
    base_env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    for env_s, ns in groups.items():
        env = {**base_env, **json.loads(env_s)}
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--variants",
            ",".join(ns),
            "--K",
            str(a.K),
            "--steps",
            str(a.steps),
            "--check-steps",
            str(a.check_steps),
            "--reps",
            str(a.reps),
            "--min-time",
            str(a.min_time),
        ]
        l0 = load()
        p = subprocess.run(
            cmd, env=env, stdout=subprocess.PIPE, text=True
        )  # stderr streams through
        if p.returncode != 0:
            print(f"group {env_s} {ns} FAILED:\n{p.returncode}")
            continue
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT_JSON ")][-1]
        res = json.loads(line[len("RESULT_JSON ") :])
        for r in res.values():
            r["env"] = json.loads(env_s)
            r["load"] = (l0, load())
        results.update(res)
        for n in ns:
            r = res[n]
            print(
                f"{n:32s} {r.get('median', 0):8.0f} img-steps/s  compile {r['compile_s']:5.1f}s  "
                f"runs {[round(t) for t in r['times']]}  load {l0:.2f}->{load():.2f}",
                flush=True,
            )
    # correctness vs lax.conv reference (same init, same indices)
    import numpy as np

    ref = None
    for cand in ("laxconv_vmap_in", "laxconv_map_out", "laxconv_map_in"):
        if cand in results:
            ref = results[cand]
            break
    if ref is None:
        sub = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--variants",
                "laxconv_vmap_in",
                "--K",
                str(a.K),
                "--steps",
                "1",
                "--check-steps",
                str(a.check_steps),
                "--reps",
                "0",
                "--min-time",
                "0",
            ],
            env=base_env,
            capture_output=True,
            text=True,
        )
        line = [x for x in sub.stdout.splitlines() if x.startswith("RESULT_JSON ")][-1]
        ref = json.loads(line[len("RESULT_JSON ") :])["laxconv_vmap_in"]
    rl, rd = np.array(ref["check_losses"]), np.array(ref["check_delta"])
    print(
        f"\ncorrectness after {a.check_steps} steps vs lax.conv (vmap): "
        "max rel diff of the K losses, "
        f"and rel L2 diff of model 0's parameter change (conv1, conv2, dense2):"
    )
    for n, r in results.items():
        rel = float(np.max(np.abs(np.array(r["check_losses"]) - rl) / np.abs(rl)))
        reld = float(np.linalg.norm(np.array(r["check_delta"]) - rd) / np.linalg.norm(rd))
        r["maxrel"], r["delta_rel"] = rel, reld
        ok = "OK" if max(rel, reld) < 1e-3 and rel < 1e-4 else "MISMATCH"
        print(f"  {n:32s} loss maxrel {rel:.1e}  dparam rel {reld:.1e} {ok}")
        r.pop("check_delta")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    if a.torch_ref:
        print("\nratio vs tuned torch:")
        for n, r in sorted(results.items(), key=lambda kv: -kv[1].get("median", 0)):
            print(f"  {n:32s} {r.get('median', 0):8.0f}  {r.get('median', 0) / a.torch_ref:5.2f}x")


if __name__ == "__main__":
    main()
