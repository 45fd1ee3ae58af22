"""The numerical tests' worst deviations under each instruction set XLA:CPU can compile for.

    python benchmarks/tolerances.py                       # native, AVX2, SSE4_2
    python benchmarks/tolerances.py --isa SSE4_2 --tests tests/test_model.py

Runs the numerical tests once per ISA (``XLA_FLAGS=--xla_cpu_max_isa=...``;
"native" leaves the flag out) with ``JAXMIA_TOLERANCE_LOG`` set, so that every
``tests/numerics.py`` comparison logs its measured error and its bound, and
prints one Markdown row per comparison: the bound, the worst error under each
ISA, and the margin (bound / worst).  A test that fails under an ISA is named
below the table.  This is how the tolerances of issue 18 were checked; CI
runs the lower-ISA pass itself (``.ci/run``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
NUMERICAL_TESTS = ("tests/test_model.py", "tests/test_formulations.py", "tests/test_train.py")


def run_pass(isa: str, tests: list[str], log: Path) -> tuple[int, str]:
    env = dict(os.environ, JAXMIA_TOLERANCE_LOG=str(log))
    flags = env.get("XLA_FLAGS", "")
    if isa != "native":
        flags = f"{flags} --xla_cpu_max_isa={isa}".strip()
    env["XLA_FLAGS"] = flags
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = "\n".join(proc.stdout.strip().splitlines()[-3:])
    return proc.returncode, tail


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--isa", nargs="+", default=["native", "AVX2", "SSE4_2"])
    p.add_argument("--tests", nargs="+", default=list(NUMERICAL_TESTS))
    args = p.parse_args(argv)

    worst: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    bounds: dict[tuple[str, str], float] = {}
    failures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for isa in args.isa:
            log = Path(tmp) / f"{isa}.jsonl"
            log.touch()
            rc, tail = run_pass(isa, args.tests, log)
            print(f"{isa}: exit {rc}; {tail.splitlines()[-1] if tail else ''}", file=sys.stderr)
            if rc:
                failures[isa] = tail
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                test = rec["test"].split("::", 1)[-1]
                # One row per test and kind of comparison (model numbers folded).
                what = re.sub(r"\d+", "#", rec["what"].split("[")[0]).strip() or "-"
                key = (test, what)
                bounds[key] = rec["bound"]
                worst[key][isa] = max(worst[key].get(isa, 0.0), rec["error"])

    print(f"CPU: {cpu_name()}; load {os.getloadavg()[0]:.2f}")
    head = " | ".join(args.isa)
    print(f"\n| test | compared | bound | {head} | margin |")
    print("|---|---|---|" + "---|" * len(args.isa) + "---|")
    for key in sorted(worst):
        errs = [worst[key].get(isa) for isa in args.isa]
        shown = " | ".join("—" if e is None else f"{e:.2g}" for e in errs)
        top = max((e for e in errs if e is not None), default=0.0)
        margin = f"{bounds[key] / top:.0f}x" if top > 0 else "exact"
        print(f"| `{key[0]}` | {key[1]} | {bounds[key]:.2g} | {shown} | {margin} |")
    for isa, tail in failures.items():
        print(f"\nFAILED under {isa}:\n{tail}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
