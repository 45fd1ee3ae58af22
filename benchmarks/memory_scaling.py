"""Peak memory against the number of rounds: it should follow models_per_chunk, not n_iterations.

Runs ``python -m jaxmia.run`` on tiny synthetic settings twice, with few and with
many rounds, each in its own child process, and records that child's peak
resident set size (its VmHWM, polled by the harness's ``_spawn``).  On CPU the
device memory is host memory, so this is the whole footprint.

    python benchmarks/memory_scaling.py --rounds 100 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import _spawn  # noqa: E402

TINY = {
    "dataset": "synthetic",
    "num_classes": 10,
    "target_index": 0,
    "subset_size": 8,
    "epochs": 1,
    "batch_size": 8,
    "lr": 0.01,
    "alpha": 0.05,
    "seed": 0,
    "eval_pairs": 1,
    "test_samples": 8,
    "save_plots": False,
}


def peak_rss(config: dict, workdir: Path, name: str) -> dict:
    cfg_path = workdir / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "jaxmia.run", "--no-progress", "--config", str(cfg_path)]
    cmd += ["--output-dir", str(workdir / "out")]
    env = {**os.environ, "JAXMIA_CACHE_DIR": "off"}
    log = workdir / f"{name}.log"
    rc, peak_mib, seconds = _spawn(cmd, env, log, timeout=6 * 3600)
    if rc != 0:
        raise SystemExit(f"jaxmia failed for {name}: {log.read_text()[-2000:]}")
    results = json.loads((workdir / "out" / name / "results.json").read_text())
    return {
        "n_iterations": config["n_iterations"],
        "models_per_chunk": results["models_per_chunk"],
        "models_trained": results["models_trained"],
        "peak_rss_mib": round(peak_mib, 1),
        "wall_seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, nargs="+", default=[100, 10_000])
    p.add_argument("--models-per-chunk", type=int, default=64)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rounds:
            cfg = {**TINY, "n_iterations": n, "models_per_chunk": args.models_per_chunk}
            rows.append(peak_rss(cfg, Path(tmp), f"rounds{n}"))
            print(json.dumps(rows[-1]), flush=True)
    print("| rounds | models trained | models per chunk | peak RSS (MiB) | wall (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n_iterations']} | {r['models_trained']} | {r['models_per_chunk']} "
            f"| {r['peak_rss_mib']} | {r['wall_seconds']} |"
        )


if __name__ == "__main__":
    main()
