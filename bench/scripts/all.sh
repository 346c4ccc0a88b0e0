#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md, in order.
set -euo pipefail
d=$(dirname "$0")
"$d/issue.sh"; "$d/versus.sh"; "$d/scale.sh"; "$d/pipeline.sh"
