#!/usr/bin/env bash
# Everything a lent GPU machine should check and time, in one call of under 9 minutes
# (see benchmarks/README.md, "GPU").
#
#   device run:  bash benchmarks/gpu_check.sh        (timeout_s ~ 560; results land in $OUT)
#   here, dry:   OUT=/tmp/gpu-dry bash benchmarks/gpu_check.sh --dry   (tiny sizes, on CPU)
#
# The GPU image has jax (CUDA), flax, optax, torch, scipy, matplotlib, pyyaml and
# tqdm but no network: jaxmia runs from this checkout through PYTHONPATH and uses
# the synthetic data set.  Steps, each under its own time limit (at most 20 + 100
# + 300 + 2 x 60 s = 540 s):
#   1. versions;
#   2. the trainer's and the formulations' tests on the GPU (every formulation
#      auto can pick against one-model training; tests that need 4 devices skip);
#   3. the harness at GPU sizes against the tuned baseline on CUDA, with the
#      chunk-size sweep done twice, vmapped lax.conv (grouped convolution) and
#      vmapped im2col (batched GEMMs), up to the memory limit (the first chunk
#      size that fails ends that sweep; --time-budget stops starting new points
#      in time for the table to print);
#   4. one float32 and one bfloat16 run of the same sizes.
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
timeout 100 python3 -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tail -15 | tee "$OUT/tests.txt"

if [ $dry = 1 ]; then
    harness=(--smoke --device cpu --sweep 1,2 --sweep-convs xla,im2col)
else
    harness=(--gpu --reps 1 --modes tuned --sweep 64,256,1024,2048 --sweep-convs xla,im2col
             --no-faithfulness --no-cache-check --run-timeout 90 --time-budget 200)
fi
echo "== harness ${harness[*]}"
timeout 300 python3 benchmarks/harness.py --config configs/bench_cpu.yaml "${harness[@]}" \
    --out "$OUT" 2>&1 | tail -40 | tee "$OUT/harness.txt"

echo "== float32 and bfloat16 runs of the same sizes"
python3 - "$dry" <<'PY' 2>&1 | tee "$OUT/bf16.txt"
import json, subprocess, sys, tempfile, pathlib, yaml
dry = sys.argv[1] == "1"
cfg = yaml.safe_load(open("configs/bench_cpu.yaml"))
if dry:
    cfg.update(subset_size=16, n_iterations=2, epochs=1, models_per_chunk=4, num_classes=10,
               batch_size=16, test_samples=16)
else:
    cfg.update(subset_size=1000, n_iterations=256, epochs=2, eval_pairs=0, models_per_chunk=512)
keep = ("image_steps_per_second", "train_seconds", "compile_seconds", "models_per_chunk",
        "member_loss_mean", "nonmember_loss_mean", "test_accuracy", "auc")
print("| compute_dtype | " + " | ".join(keep) + " |")
print("|---|" + "---|" * len(keep))
with tempfile.TemporaryDirectory() as d:
    for dtype in ("float32", "bfloat16"):
        p = pathlib.Path(d) / f"{dtype}.yaml"
        p.write_text(yaml.safe_dump({**cfg, "compute_dtype": dtype}))
        try:
            subprocess.run([sys.executable, "-m", "jaxmia.run", "--config", str(p), "--output-dir",
                            d, "--no-progress"], check=True, stdout=subprocess.DEVNULL, timeout=60)
        except (subprocess.SubprocessError, OSError) as e:
            print(f"| {dtype} | failed: {str(e)[:80]} |")
            continue
        r = json.loads((pathlib.Path(d) / dtype / "results.json").read_text())
        print(f"| {dtype} | " + " | ".join(str(r.get(k)) for k in keep) + " |")
PY
ls -la "$OUT"
