#!/usr/bin/env bash
# Everything a lent GPU machine should check and time, in one call (see benchmarks/README.md, "GPU").
#
#   device run:  bash benchmarks/gpu_check.sh        (timeout_s ~ 540; results land in $OUT)
#   here, dry:   OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry   (tiny sizes, on CPU)
#
# The GPU image has jax (CUDA), flax, optax, torch, scipy, matplotlib, pyyaml and
# tqdm but no network: jaxmia runs from this checkout through PYTHONPATH and uses
# the synthetic data set.  Steps: the trainer's tests on the GPU (vmapped models
# equal one-model training there too), the harness at GPU sizes against the
# tuned/func baselines on CUDA, and one bf16 run of the same config.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" JAXMIA_NO_DOWNLOAD=1
export JAXMIA_CACHE_DIR=off  # the harness sets its own cache folders where it needs one
dry=0; [ "${1:-}" = "--dry" ] && dry=1

python3 - <<'PY' 2>&1 | tee "$OUT/machine.txt"
import jax, torch
print("jax", jax.__version__, jax.devices())
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
PY

echo "== trainer tests on $(python3 -c 'import jax; print(jax.default_backend())')"
# conftest asks for 4 fake CPU devices; on a GPU host only the CPU platform sees them.
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_train.py 2>&1 | tail -15 | tee "$OUT/tests.txt"

if [ $dry = 1 ]; then
    harness=(--smoke --device cpu)
else
    harness=(--gpu --reps 1 --sweep 16,64,256,512 --no-faithfulness)
fi
echo "== harness ${harness[*]}"
timeout 330 python3 benchmarks/harness.py --config configs/bench_cpu.yaml "${harness[@]}" \
    --out "$OUT" 2>&1 | tail -40 | tee "$OUT/harness.txt"

echo "== bf16 run of the same sizes"
python3 - "$dry" <<'PY' 2>&1 | tee "$OUT/bf16.txt"
import json, subprocess, sys, tempfile, pathlib, yaml
dry = sys.argv[1] == "1"
cfg = yaml.safe_load(open("configs/bench_cpu.yaml"))
if dry:
    cfg.update(subset_size=16, n_iterations=2, epochs=1, models_per_chunk=4, num_classes=10)
else:
    cfg.update(subset_size=2000, n_iterations=512, epochs=2, eval_pairs=0, models_per_chunk=512)
with tempfile.TemporaryDirectory() as d:
    for dtype in ("float32", "bfloat16"):
        p = pathlib.Path(d) / f"{dtype}.yaml"
        p.write_text(yaml.safe_dump({**cfg, "compute_dtype": dtype}))
        subprocess.run([sys.executable, "-m", "jaxmia.run", "--config", str(p), "--output-dir", d,
                        "--no-progress"], check=True, stdout=subprocess.DEVNULL, timeout=200)
        r = json.loads((pathlib.Path(d) / dtype / "results.json").read_text())
        keep = ("image_steps_per_second", "train_seconds", "compile_seconds", "models_per_chunk",
                "member_loss_mean", "nonmember_loss_mean", "test_accuracy", "auc")
        print(dtype, json.dumps({k: r[k] for k in keep}))
PY
ls -la "$OUT"
