#!/usr/bin/env bash
# The long version of the reliability tests (tests/reliability), with its figures:
#
#     bench/reliability_long.sh [OUT_DIR]        # default var/reliability-long
#
# NEUROLABEL_LONG=1 selects the long sizes (12 kill -9 cycles, >100,000 hypothesis cases, 800,000 atheris
# runs, a 40 s database lock, a 10-minute soak); each test writes its figures as JSON into OUT_DIR, and
# bench/reliability_summary.py turns them into OUT_DIR/summary.md (the tables of docs/reliability.md).
# Runs niced; about 45 minutes on 2 cores. The short version: python -m pytest tests/reliability
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-var/reliability-long}"
mkdir -p "$out"
rm -f "$out"/*.json
export NEUROLABEL_LONG=1 NEUROLABEL_FIGURES="$out"
started=$(date +%s)
nice -n 10 python -m pytest tests/reliability -p no:cacheprovider -q -rfE --durations=0 2>&1 | tee "$out/pytest.log"
status=${PIPESTATUS[0]}
echo "elapsed $(( $(date +%s) - started )) s, exit status $status" | tee -a "$out/pytest.log"
python bench/reliability_summary.py "$out" > "$out/summary.md"
exit "$status"
