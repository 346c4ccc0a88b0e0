#!/usr/bin/env bash
# certsign quickstart: the local stack on loopback, and the story it exists for.
#
#   deploy/quickstart.sh up       build, create the CA (once), start signer and
#                                 approver, walk a new team member's certificate
#                                 request end to end
#   deploy/quickstart.sh status   is each daemon alive and answering?
#   deploy/quickstart.sh down     stop both daemons (the state stays)
#
# Environment:
#   CERTSIGN_STATE          state directory (default: <repo>/.quickstart)
#   CERTSIGN_SIGNER_ADDR    signer listen address   (default 127.0.0.1:7443)
#   CERTSIGN_APPROVER_ADDR  approver listen address (default 127.0.0.1:8443)
#   CERTSIGN_KUBE_ADDR      the approver's Kubernetes API for kubectl
#                           (default 127.0.0.1:6443)
#   CARGO_TARGET_DIR        where cargo builds (default: <repo>/target)
#   CERTSIGN_BIN_DIR        use the binaries in this directory instead of
#                           building them (e.g. an installed release)
#
# Re-running `up` reuses the CA and configs in the state directory (the
# addresses are then the ones recorded there) and never overwrites them.
# This is a development stack: every key lives in one directory. The
# production layout keeps the CA key on its own host (deploy/README.md).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

STATE=$(abspath "${CERTSIGN_STATE:-$REPO_ROOT/.quickstart}")
TARGET_DIR=$(abspath "${CARGO_TARGET_DIR:-$REPO_ROOT/target}")
BIN=$(abspath "${CERTSIGN_BIN_DIR:-$TARGET_DIR/release}")
DAEMONS=(signer approver)
# How long a daemon may take to print its `listening on` line. A bound, so a
# daemon that hangs gets reported instead of waited on forever.
START_TIMEOUT=${CERTSIGN_START_TIMEOUT:-60}

die() {
  printf 'quickstart: %s\n' "$*" >&2
  exit 1
}
say() { printf '\n# %s\n' "$*"; }
# Print a command exactly as a user would type it, then run it (in $PWD).
run() {
  printf '$ %s\n' "$1"
  eval "$1"
}

need_tool() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed ($2)"
}

# --- addresses ---------------------------------------------------------------

# The listen address recorded in a config written by `init` (`listen = "..."`).
config_listen() {
  sed -n 's/^[[:space:]]*listen[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n1
}

daemon_config() { printf '%s/%s/%s.toml\n' "$STATE" "$1" "$1"; }
daemon_addr() { config_listen "$(daemon_config "$1")"; }
daemon_bin() { printf '%s/certsign-%s\n' "$BIN" "$1"; }
pid_file() { printf '%s/%s.pid\n' "$STATE" "$1"; }
log_file() { printf '%s/%s.log\n' "$STATE" "$1"; }

# True if something accepts TCP connections on HOST:PORT.
port_busy() {
  local host=${1%:*} port=${1##*:}
  host=${host#[}
  host=${host%]}
  if command -v ss >/dev/null 2>&1; then
    # ss shows listeners even where a firewall would drop our probe.
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
      return 0
    fi
  fi
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# The pid of a running daemon we started, or nothing. A pid file whose
# process is gone, or whose pid now belongs to another program, is stale.
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "certsign-$1 serve"; then
    printf '%s\n' "$pid"
  fi
}

# --- commands ------------------------------------------------------------------

build() {
  if [ -n "${CERTSIGN_BIN_DIR:-}" ]; then
    say "Using the binaries in $BIN"
    for b in certsign-signer certsign-approver certctl; do
      [ -x "$BIN/$b" ] || die "$BIN/$b not found (CERTSIGN_BIN_DIR)"
    done
    return
  fi
  need_tool cargo "install the Rust toolchain: https://rustup.rs"
  say "Build the three binaries (release)"
  (cd "$REPO_ROOT" && run "cargo build --release --bins") || die "cargo build failed (see above)"
  for b in certsign-signer certsign-approver certctl; do
    [ -x "$BIN/$b" ] || die "cargo build did not produce $BIN/$b"
  done
}

init_state() {
  if [ -f "$STATE/ca.crt" ]; then
    say "Reusing the existing CA and configs in $STATE"
    for d in signer approver; do
      [ -f "$(daemon_config "$d")" ] || die "$STATE has a CA but no $(daemon_config "$d"); remove $STATE or set CERTSIGN_STATE"
    done
    local want have
    for d in signer approver; do
      want=${CERTSIGN_SIGNER_ADDR:-}
      [ "$d" = approver ] && want=${CERTSIGN_APPROVER_ADDR:-}
      have=$(daemon_addr "$d")
      if [ -n "$want" ] && [ "$want" != "$have" ]; then
        die "$STATE was created for the $d on $have, not $want; use another CERTSIGN_STATE"
      fi
    done
    return
  fi
  local signer_addr=${CERTSIGN_SIGNER_ADDR:-127.0.0.1:7443}
  local approver_addr=${CERTSIGN_APPROVER_ADDR:-127.0.0.1:8443}
  local kube_addr=${CERTSIGN_KUBE_ADDR:-127.0.0.1:6443}
  say "Create the CA, the signer's and approver's TLS identities, an admin, and their configs (and a kubeconfig)"
  mkdir -p "$(dirname "$STATE")"
  run "certsign-signer init --dir '$STATE' --signer-listen $signer_addr --approver-listen $approver_addr --kube-listen $kube_addr"
  [ -f "$STATE/ca.crt" ] || die "certsign-signer init did not write $STATE/ca.crt"
  onboarding_token
}

# A bootstrap token new team members submit their first request with (they
# have no certificate yet, and the admin must not be the requestor of what
# the admin approves). The approver keeps only its SHA-256.
onboarding_token() {
  local id secret expires
  id=$(openssl rand -hex 3)
  secret=$(openssl rand -hex 8)
  expires=$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)
  say "Create an onboarding bootstrap token for new team members (valid 30 days)"
  cat >>"$(daemon_config approver)" <<EOF

# Added by deploy/quickstart.sh: the onboarding token (secret in ../onboarding.token).
[[bootstrap_tokens]]
id = "$id"
secret_sha256 = "$(printf %s "$secret" | sha256sum | cut -d' ' -f1)"
expires = "$expires"
signer_names = ["kubernetes.io/kube-apiserver-client"]
max_uses = 1000
EOF
  (umask 077 && printf '%s.%s\n' "$id" "$secret" >"$STATE/onboarding.token")
  printf 'token %s.**************** written to %s, its hash to %s\n' "$id" "$STATE/onboarding.token" "$(daemon_config approver)"
}

start_daemon() {
  local name=$1 pid addr log
  pid=$(running_pid "$name")
  addr=$(daemon_addr "$name")
  if [ -n "$pid" ]; then
    printf '%s already running (pid %s) on %s\n' "certsign-$name" "$pid" "$addr"
    return
  fi
  [ -n "$addr" ] || die "no listen address in $(daemon_config "$name")"
  if port_busy "$addr"; then
    busy_port_die "$name" "$addr"
  fi
  log=$(log_file "$name")
  [ -f "$log" ] && mv -f "$log" "$log.1"
  printf '$ certsign-%s serve --config %s >%s 2>&1 &\n' "$name" "$(daemon_config "$name")" "$log"
  # setsid: the daemons outlive this script and are not hit by a Ctrl-C in
  # the terminal that started them; `down` stops them by pid.
  nohup setsid "$(daemon_bin "$name")" serve --config "$(daemon_config "$name")" >"$log" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$(pid_file "$name")"
  local waited=0
  until grep -q 'listening on' "$log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$(pid_file "$name")"
      tail -n 20 "$log" >&2 || true
      die "certsign-$name exited during startup (log: $log)"
    fi
    if [ "$waited" -ge $((START_TIMEOUT * 10)) ]; then
      tail -n 20 "$log" >&2 || true
      die "certsign-$name did not report 'listening on' within ${START_TIMEOUT}s (log: $log)"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  printf '%s\n' "$(grep -m1 'listening on' "$log")"
}

stop_daemon() {
  local name=$1 pid
  pid=$(running_pid "$name")
  if [ -z "$pid" ]; then
    rm -f "$(pid_file "$name")"
    printf 'certsign-%s: not running\n' "$name"
    return
  fi
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge 100 ]; then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$(pid_file "$name")"
  printf 'certsign-%s: stopped (pid %s)\n' "$name" "$pid"
}

# A real call to the signer: an mTLS handshake as the approver (its only
# client), verifying the signer's certificate against the CA and that it
# speaks HTTP/2. (The signer serves no reflection, so grpcurl cannot call
# its health service without the .proto files.)
signer_answers() {
  local out
  out=$(openssl s_client -connect "$(daemon_addr signer)" -CAfile "$STATE/ca.crt" -verify_return_error \
    -cert "$STATE/approver/tls.crt" -key "$STATE/approver/tls.key" -alpn h2 </dev/null 2>&1) || return 1
  grep -q 'Verify return code: 0 (ok)' <<<"$out" && grep -q 'ALPN protocol: h2' <<<"$out"
}

# A real call to the approver: list the requests as the admin.
approver_answers() {
  CERTCTL_CONFIG="$STATE/admin/certctl.toml" "$BIN/certctl" get csr >/dev/null 2>&1
}

status() {
  local bad=0 name pid
  [ -f "$STATE/ca.crt" ] || die "no quickstart state in $STATE (run: deploy/quickstart.sh up)"
  need_tool openssl "apt-get install openssl"
  for name in "${DAEMONS[@]}"; do
    pid=$(running_pid "$name")
    if [ -z "$pid" ]; then
      printf 'certsign-%s: not running\n' "$name"
      bad=1
    elif "${name}_answers"; then
      printf 'certsign-%s: running (pid %s) on %s, healthy\n' "$name" "$pid" "$(daemon_addr "$name")"
    else
      printf 'certsign-%s: running (pid %s) on %s, NOT answering (log: %s)\n' "$name" "$pid" "$(daemon_addr "$name")" "$(log_file "$name")"
      bad=1
    fi
  done
  return "$bad"
}

# The first free user name: jane, jane-2, jane-3, ... (a re-run must not
# collide with the request or the files of an earlier one).
next_user() {
  local name=jane n=1
  while [ -e "$STATE/users/$name.key" ] || certctl get csr "$name" >/dev/null 2>&1; do
    n=$((n + 1))
    name="jane-$n"
  done
  printf '%s\n' "$name"
}

# How a user pulls the certificate out of `get csr -o json`, with what this
# machine has (Debian's base has python3 more often than jq).
extract_cert_cmd() {
  local u=$1
  if command -v python3 >/dev/null 2>&1; then
    printf '%s' "certctl --token \"\$TOKEN\" get csr $u -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"status\"][\"certificate\"])' | base64 -d > $u.crt"
  elif command -v jq >/dev/null 2>&1; then
    printf '%s' "certctl --token \"\$TOKEN\" get csr $u -o json | jq -r .status.certificate | base64 -d > $u.crt"
  else
    printf '%s' "certctl --token \"\$TOKEN\" certificate wait $u --out $u.crt"
  fi
}

story() {
  local u
  mkdir -p "$STATE/users"
  cd "$STATE/users"
  say "Use the binaries and the admin's certctl config (in $STATE/users)"
  run "export PATH=\"$BIN:\$PATH\""
  run "export CERTCTL_CONFIG=$STATE/admin/certctl.toml"
  u=$(next_user)

  say "The admin gives the new team member, $u, the onboarding token"
  run "TOKEN=\$(cat ../onboarding.token)"

  say "$u creates a private key and a certificate signing request"
  run "openssl genrsa -out $u.key 3072"
  run "openssl req -new -key $u.key -out $u.csr -subj \"/CN=$u/O=dev\""

  say "$u submits it as a Kubernetes CertificateSigningRequest, authenticated by the token"
  run "cat <<EOF | certctl --token \"\$TOKEN\" apply -f -
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: $u
spec:
  request: \$(base64 < $u.csr | tr -d '\\n')
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: 86400
  usages:
  - client auth
EOF"

  say "The admin sees it pending"
  run "certctl get csr $u"

  say "The admin approves it (certctl signs the approval with the admin's own key; the signer checks that signature)"
  run "certctl certificate approve $u"

  say "$u waits until the signer has issued it; the admin sees it Approved,Issued"
  run "certctl --token \"\$TOKEN\" certificate wait $u --timeout 2m >/dev/null"
  run "certctl get csr $u"

  say "$u takes the certificate from the request object"
  run "$(extract_cert_cmd "$u")"
  run "openssl x509 -in $u.crt -noout -subject -issuer -enddate"
  run "openssl verify -CAfile ../ca.crt $u.crt"

  say "$u now calls the approver as herself: she asks for a second certificate (for her laptop)..."
  run "certctl --cert $u.crt --key $u.key create csr $u-laptop --subject \"/CN=$u/O=dev\" --usages \"digital signature,client auth\" --key-out $u-laptop.key"
  say "...and sees only the requests she made herself, while the admin sees everyone's"
  run "certctl --cert $u.crt --key $u.key get csr"
  run "certctl get csr"
  if [ -f "$STATE/admin/kubeconfig" ] && command -v kubectl >/dev/null; then
    say "The same requests through the Kubernetes API, with the real kubectl"
    run "KUBECONFIG=$STATE/admin/kubeconfig kubectl get csr"
  fi

  say "The stack is running. To use it:"
  cat <<EOF
  export PATH="$BIN:\$PATH"
  export CERTCTL_CONFIG=$STATE/admin/certctl.toml   # the admin (CN admin, O system:masters)
  certctl get csr
  # a new user (token-authenticated) asks, the admin approves, the user collects:
  certctl --token "\$(cat $STATE/onboarding.token)" create csr NAME --subject "/CN=NAME/O=dev" --key-out NAME.key
  certctl certificate approve NAME
  certctl --token "\$(cat $STATE/onboarding.token)" certificate wait NAME --out NAME.crt
  # kubectl and Kubernetes client libraries, unchanged (certificates.k8s.io/v1):
  export KUBECONFIG=$STATE/admin/kubeconfig   # written by init --kube-listen
  kubectl get csr
  certctl config kubeconfig --token "\$(cat $STATE/onboarding.token)" > token.kubeconfig   # a token user's
  $0 status
  $0 down
Logs: $(log_file signer), $(log_file approver)
EOF
}

# Fail before the (long) build when a port a daemon needs is taken by
# something else. start_daemon checks again right before starting.
preflight_ports() {
  local name addr
  for name in "${DAEMONS[@]}"; do
    [ -z "$(running_pid "$name")" ] || continue
    if [ -f "$(daemon_config "$name")" ]; then
      addr=$(daemon_addr "$name")
    elif [ "$name" = signer ]; then
      addr=${CERTSIGN_SIGNER_ADDR:-127.0.0.1:7443}
    else
      addr=${CERTSIGN_APPROVER_ADDR:-127.0.0.1:8443}
    fi
    port_busy "$addr" && busy_port_die "$name" "$addr"
  done
  return 0
}

busy_port_die() {
  die "port ${2##*:} on ${2%:*} is already in use; stop what uses it, or set CERTSIGN_STATE to a new directory and CERTSIGN_${1^^}_ADDR to a free address"
}

up() {
  need_tool openssl "apt-get install openssl"
  need_tool setsid "apt-get install util-linux"
  need_tool base64 "apt-get install coreutils"
  preflight_ports
  build
  export PATH="$BIN:$PATH"
  init_state
  say "Start the signer (holds the CA key, answers only the approver) and the approver"
  start_daemon signer
  start_daemon approver
  story
}

case "${1:-}" in
  up) up ;;
  down)
    [ -d "$STATE" ] || die "no quickstart state in $STATE"
    stop_daemon approver
    stop_daemon signer
    ;;
  status) status ;;
  *)
    printf 'usage: %s up|down|status\n' "$0" >&2
    exit 2
    ;;
esac
