#!/usr/bin/env bash
# Sourced by the other scripts: builds the release binaries once and puts
# certsign-bench on PATH. Benchmarks measure the release build only.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
cargo build --release -p certsign-bench -p certsign-setup -p certsign-approver --bins >&2
bench="$root/target/release/certsign-bench"
echo "# $(date -u +%FT%TZ) $(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); uptime:$(uptime)"
