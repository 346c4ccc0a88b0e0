#!/usr/bin/env bash
# The numbered benchmarks of docs/BENCHMARKS.md: 1, 2+3, 5, then 4.
set -euo pipefail
d=$(dirname "$0")
"$d/issue.sh"; "$d/versus.sh"; "$d/scale.sh"; "$d/pipeline.sh"
