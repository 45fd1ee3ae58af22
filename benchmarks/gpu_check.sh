#!/usr/bin/env bash
# Everything a lent GPU machine should check and time, in one call of under 10 minutes
# (see benchmarks/README.md, "GPU").
#
#   device run:  bash benchmarks/gpu_check.sh        (timeout_s ~ 590; results land in $OUT)
#   here, dry:   OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry   (tiny sizes, on CPU)
#
# The GPU image has jax (CUDA), flax, optax, torch, scipy, matplotlib, pyyaml and
# tqdm but no network: jaxmia runs from this checkout through PYTHONPATH and uses
# the synthetic data set.  Steps, each under its own time limit (at most
# 20 + 70 + 110 + 2 x 120 + 100 = 540 s):
#   1. versions;
#   2. the trainer's and the formulations' tests on the GPU (every formulation
#      auto can pick against one-model training; tests that need 4 devices skip);
#   3. the CNN: the harness at GPU sizes against the tuned baseline on CUDA, with
#      the chunk-size sweep done twice, vmapped lax.conv (grouped convolution)
#      and vmapped im2col (batched GEMMs), up to the memory limit (the first
#      chunk size that fails ends that sweep; --time-budget stops starting new
#      points in time for the table to print);
#   4. WRN-28-2 and ResNet-9: the same harness (--model), jaxmia's chunks sized
#      from the device memory (models_per_chunk: auto) in float32 and in
#      bfloat16 (float32 master weights and BatchNorm statistics), against the
#      tuned torch twin, and a vmapped lax.conv sweep of chunk sizes up to the
#      memory limit;
#   5. configs/lira_cifar10.yaml's projected time on this GPU: one epoch of one
#      auto-sized chunk at the config's own sizes, scaled to 128 models x 100
#      epochs;
# Everything prints as markdown tables, ready to paste into benchmarks/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" JAXMIA_NO_DOWNLOAD=1
export JAXMIA_CACHE_DIR=off  # the harness sets its own cache folders where it needs one
dry=0; [ "${1:-}" = "--dry" ] && dry=1

timeout 20 python3 - <<'PY' 2>&1 | tee "$OUT/machine.txt"
import jax, torch
print("jax", jax.__version__, jax.devices())
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
PY

echo "== trainer and formulation tests on $(python3 -c 'import jax; print(jax.default_backend())')"
# conftest asks for 4 fake CPU devices; on a GPU host only the CPU platform sees them.
tests=(tests/test_train.py tests/test_formulations.py)
# dry: two quick tests only (the whole set takes minutes on a busy 2-core CPU)
[ $dry = 1 ] && tests=(tests/test_formulations.py::test_auto_picks_only_tested_formulations
                       tests/test_train.py::test_member_and_nonmember_differ_only_by_the_target)
timeout 70 python3 -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tail -15 | tee "$OUT/tests.txt"

if [ $dry = 1 ]; then
    harness=(--smoke --device cpu --sweep 1,2 --sweep-convs xla,im2col)
else
    harness=(--gpu --reps 1 --modes tuned --sweep 256,1024,2048 --sweep-convs xla,im2col
             --no-faithfulness --no-cache-check --run-timeout 60 --time-budget 80)
fi
echo "== CNN: harness ${harness[*]}"
timeout 110 python3 benchmarks/harness.py --config configs/bench_cpu.yaml "${harness[@]}" \
    --out "$OUT" 2>&1 | tail -30 | tee "$OUT/harness.txt"

# dry: the real networks on a few images (every stage runs, nothing is timed)
python3 -c "import yaml; c = yaml.safe_load(open('configs/bench_cpu_resnets.yaml'));
c.update(n_iterations=1, subset_size=15, batch_size=16, epochs=1, models_per_chunk=2,
         test_samples=16); yaml.safe_dump(c, open('$OUT/tiny_resnets.yaml', 'w'))"
for model in wrn28_2 resnet9; do
    if [ $dry = 1 ]; then
        resnet=(--config "$OUT/tiny_resnets.yaml" --model "$model" --reps 1 --modes tuned
                --sweep 2 --no-faithfulness --no-cache-check --baseline-threads 1
                --device cpu --run-timeout 85)
    else
        resnet=(--config configs/bench_cpu_resnets.yaml --model "$model" --gpu --reps 1
                --modes tuned --variant bf16:compute_dtype=bfloat16 --sweep 16,64
                --sweep-convs xla --no-faithfulness --no-cache-check --run-timeout 50
                --time-budget 70)
    fi
    echo "== $model: harness ${resnet[*]}"
    timeout 120 python3 benchmarks/harness.py "${resnet[@]}" --out "$OUT" 2>&1 | tail -16 \
        | tee "$OUT/harness-$model.txt"
done

echo "== configs/lira_cifar10.yaml: projected time on this device"
timeout 100 python3 - "$dry" <<'PY' 2>&1 | tee "$OUT/lira_projection.txt"
import json, subprocess, sys, tempfile, pathlib, yaml
from jaxmia.models import MODELS
dry = sys.argv[1] == "1"
cfg = yaml.safe_load(open("configs/lira_cifar10.yaml"))
full_models, full_epochs = cfg["n_models"], cfg["epochs"]
per_model = cfg["subset_size"] + cfg["inclusion"] * cfg["n_targets"]
# One epoch of one chunk at the config's own sizes (synthetic data, same shapes).
cfg.update(dataset="synthetic", epochs=1, save_plots=False, test_samples=1000)
if dry:
    cfg.update(subset_size=64, n_targets=16, n_models=2, batch_size=16, test_samples=16)
with tempfile.TemporaryDirectory() as d:
    p = pathlib.Path(d) / "lira.yaml"
    # 32 models: one chunk where auto fits 32 (H200: ~56 at 1.5 GiB each), else two.
    # The one epoch's rate includes the evaluation, which the 100 epochs amortise:
    # the projection errs long.
    cfg["n_models"] = 2 if dry else 32
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

ls -la "$OUT"
