#!/usr/bin/env bash
# Everything a lent GPU machine should check and time, in one call of under 10 minutes
# (see benchmarks/README.md, "GPU").
#
#   device run:  bash benchmarks/gpu_check.sh        (timeout_s 600; results land in $OUT)
#   here, dry:   OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry   (tiny sizes, on CPU)
#
# The device tool brings back at most 8 files, so everything is written under
# $OUT/all and packed at the end into $OUT/gpu_check.tgz, beside the whole log
# ($OUT/gpu_check.log).
#
# The GPU image has jax (CUDA), flax, optax, torch, scipy, matplotlib, pyyaml and
# tqdm but no network: jaxmia runs from this checkout through PYTHONPATH and uses
# the synthetic data set.  The first run (H200, 2026-11-30) measured the CNN,
# WRN-28-2 and ResNet-9 in float32; this check times what it left unmeasured.
# Steps, each under its own time limit (at most 20 + 60 + 100 + 150 + 210 = 540 s):
#   1. versions;
#   2. the trainer's and the formulations' vmapped-equals-alone tests on the GPU
#      (conftest asks for full float32 products there; stops at the second
#      failure and prints both in full);
#   3. configs/lira_cifar10.yaml's projected time on this GPU: one epoch of one
#      auto-sized chunk at the config's own sizes, scaled to 128 models x 100
#      epochs;
#   4. WRN-28-2 and ResNet-9: the harness (--model), jaxmia's chunks sized from
#      the device memory (models_per_chunk: auto) in float32 and in bfloat16
#      (float32 master weights and BatchNorm statistics), against the tuned
#      torch twin (no chunk sweep: it would not fit the step's limit);
# The CNN's im2col sweep (not reached on 2026-11-30) is one more call:
#   python3 benchmarks/harness.py --config configs/bench_cpu.yaml --gpu --reps 1 \
#       --modes tuned --sweep 256,1024 --sweep-convs im2col,xla --no-faithfulness \
#       --no-cache-check --run-timeout 90 --time-budget 300 --out "$OUT"
# Everything prints as markdown tables, ready to paste into benchmarks/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the results}"
FINAL=$OUT
OUT=$FINAL/all
mkdir -p "$OUT"
exec > >(tee "$FINAL/gpu_check.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" JAXMIA_NO_DOWNLOAD=1
export JAXMIA_CACHE_DIR=off  # the harness sets its own cache folders where it needs one
# jaxmia's XLA workarounds (jaxmia.run.XLA_WORKAROUNDS) need nothing here: jaxmia.run
# adds them for the runs and the harness's children, tests/conftest.py for the tests.
dry=0; [ "${1:-}" = "--dry" ] && dry=1

timeout 20 python3 - <<'PY' 2>&1 | tee "$OUT/machine.txt"
import jax, torch
print("jax", jax.__version__, jax.devices())
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
PY

echo "== vmapped-equals-alone tests on $(python3 -c 'import jax; print(jax.default_backend())')"
tests=(tests/test_train.py::test_vmapped_models_equal_models_trained_alone tests/test_formulations.py)
# dry: two quick tests only (the whole set takes minutes on a busy 2-core CPU)
[ $dry = 1 ] && tests=(tests/test_formulations.py::test_auto_picks_only_tested_formulations
                       tests/test_train.py::test_member_and_nonmember_differ_only_by_the_target)
# the first failures in full (-rf names them), not a tail cut off by the time limit
timeout 60 python3 -m pytest -q -rf --maxfail=2 -p no:cacheprovider "${tests[@]}" 2>&1 \
    | tee "$OUT/tests.txt" | tail -40

echo "== configs/lira_cifar10.yaml: projected time on this device"
timeout 100 python3 - "$dry" <<'PY' 2>&1 | grep -v '^    @' | tee "$OUT/lira_projection.txt"
import json, subprocess, sys, tempfile, pathlib, yaml
from jaxmia.models import MODELS
dry = sys.argv[1] == "1"
cfg = yaml.safe_load(open("configs/lira_cifar10.yaml"))
full_models, full_epochs = cfg["n_models"], cfg["epochs"]
per_model = cfg["subset_size"] + cfg["inclusion"] * cfg["n_targets"]
# One epoch of one chunk at the config's own sizes (synthetic data, same shapes).
# (one epoch: no warm-up, which must end before the last epoch; the work is the same)
cfg.update(dataset="synthetic", epochs=1, warmup_epochs=0, save_plots=False, test_samples=1000)
if dry:
    cfg.update(subset_size=64, n_targets=16, n_models=2, batch_size=16, test_samples=16)
with tempfile.TemporaryDirectory() as d:
    p = pathlib.Path(d) / "lira.yaml"
    # 16 models: one chunk (auto fits about 40 on an H200), about 25 s of training
    # at WRN-28-2's measured rate, inside the step's limit with the compile.  The
    # one epoch's rate includes the evaluation, which the 100 epochs amortise: the
    # projection errs long.
    cfg["n_models"] = 2 if dry else 16
    p.write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-m", "jaxmia.run", "--config", str(p), "--output-dir", d,
                    "--no-progress"], check=True, stdout=subprocess.DEVNULL, timeout=95)
    r = json.loads((pathlib.Path(d) / "lira" / "results.json").read_text())
rate = r["image_steps_per_second"]
steps = full_models * full_epochs * per_model
flops = MODELS["wrn28_2"].flops_per_image_step(10)
print("| models per chunk | image-steps/s | TFLOP/s | compile s | projected hours (128 models x 100 epochs) |")
print("|---|---|---|---|---|")
print(f"| {r['models_per_chunk']} | {rate:.0f} | {rate * flops / 1e12:.1f} | {r['compile_seconds']:.0f} "
      f"| {steps / rate / 3600:.2f} |")
PY

# dry: the real networks on a few images (every stage runs, nothing is timed)
python3 -c "import yaml; c = yaml.safe_load(open('configs/bench_cpu_resnets.yaml'));
c.update(n_iterations=1, subset_size=15, batch_size=16, epochs=1, warmup_epochs=0, models_per_chunk=2,
         test_samples=16); yaml.safe_dump(c, open('$OUT/tiny_resnets.yaml', 'w'))"
for model in wrn28_2 resnet9; do
    if [ $dry = 1 ]; then
        resnet=(--config "$OUT/tiny_resnets.yaml" --model "$model" --reps 1 --modes tuned
                --sweep 2 --no-faithfulness --no-cache-check --baseline-threads 1
                --device cpu --run-timeout 85)
    else
        # float32, torch and bfloat16: about 125 s (WRN-28-2) and 180 s (ResNet-9),
        # from the first H200 run (compile 36 s and 69 s).  No sweep: the harness
        # checks its time budget only before a point, and a point started late
        # would outlast the step's limit and take the tables with it (--sweep 128
        # is the chunk auto picks, reused; --time-budget 1 skips any other).
        resnet=(--config configs/bench_cpu_resnets.yaml --model "$model" --gpu --reps 1
                --modes tuned --variant bf16:compute_dtype=bfloat16 --sweep 128
                --sweep-convs xla --no-faithfulness --no-cache-check --run-timeout 100
                --time-budget 1)
    fi
    limit=$([ "$model" = wrn28_2 ] && echo 150 || echo 210)
    echo "== $model: harness ${resnet[*]}"
    timeout "$limit" python3 benchmarks/harness.py "${resnet[@]}" --out "$OUT" 2>&1 \
        | grep -v '^    @' | tail -16 | tee "$OUT/harness-$model.txt"
done

ls -la "$OUT"
tar czf "$FINAL/gpu_check.tgz" -C "$FINAL" all && rm -rf "$OUT"
# let tee write the log's last lines before the device tool collects it
exec >&- 2>&-
wait "$tee_pid"
