#!/usr/bin/env bash
# Mutation testing of the numerical core (mutmut; pip install -e '.[dev,mutation]'), then its
# report in results/mutation_report.txt: per shard killed / survived, and every survivor's diff.
#
#   benchmarks/mutation.sh [SHARD ...]      default: every shard (benchmarks/mutation.py)
#
# Each shard runs within an hour on two cores (2 to 46 minutes measured under load; all of
# them about three hours: results/mutation.md); not part of the default test pass. Results stay in
# mutants/ (ignored by git); a shard given again runs all its mutants again.
# PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
nice -n 10 "$PYTHON" benchmarks/mutation.py run "$@"
"$PYTHON" benchmarks/mutation.py report > results/mutation_report.txt
head -n 16 results/mutation_report.txt
