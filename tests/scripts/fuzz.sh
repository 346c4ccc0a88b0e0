#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while on the stable toolchain
# (`-s none`: no sanitizer, which needs nightly), seeded from the hostile
# corpus in tests/corpus. Installs cargo-fuzz first if it is missing.
#
#   tests/scripts/fuzz.sh                 # 20 s per target (the CI run)
#   FUZZ_SECONDS=600 tests/scripts/fuzz.sh   # the documented longer run
#   tests/scripts/fuzz.sh csr             # one target
#
# Prints one `FUZZ <target> runs=<n> seconds=<s> crashes=0` line per target;
# a crash stops the script with libFuzzer's report and a non-zero status
# (the input is kept in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(csr evidence manifest)
fi

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
# Seeds: the corpus, with the selector byte each target reads first.
mkdir -p "$seeds/csr" "$seeds/evidence" "$seeds/manifest"
for f in "$root"/tests/corpus/csr/*; do
  b=$(basename "$f")
  { printf '\x86'; cat "$f"; } >"$seeds/csr/pem-$b"
  { printf '\x06'; openssl req -in "$f" -outform DER 2>/dev/null || true; } >"$seeds/csr/der-$b"
done
cp "$root"/tests/corpus/manifest/* "$seeds/manifest/"
printf '\x01\x0a\x05uid-1' >"$seeds/evidence/approval"
printf '\x00' >"$seeds/evidence/empty"

cd fuzz
cargo fuzz build -s none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  echo "== cargo fuzz run -s none $t -- -max_total_time=$seconds"
  if ! cargo fuzz run -s none "$t" "corpus/$t" "$seeds/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log"
    echo "FUZZ $t crashed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  echo "FUZZ $t runs=${runs:-?} seconds=$seconds crashes=0"
  rm -f "$log"
done
