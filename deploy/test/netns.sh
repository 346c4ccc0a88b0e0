#!/usr/bin/env bash
# Isolation shown, not claimed: the signer, the approver and an outsider each
# in their own network namespace, wired the way deploy/README.md says a
# production network should be:
#
#   [ns sig]  signer   10.77.0.1 ──veth── 10.77.0.2  [ns app]  approver
#                                         10.78.0.1 ──veth── 10.78.0.2  [ns out]  outsider
#
# The approver's namespace does not forward (net.ipv4.ip_forward=0), so the
# outsider reaches the approver (10.78.0.1:8443) but never the signer
# (10.77.0.1:7443), even with a route pointing at the approver. The full
# request → approve → issue flow runs from the outsider's namespace.
#
# Usage (as root): deploy/test/netns.sh BIN_DIR [WORK_DIR]
#   BIN_DIR   holds certsign-signer, certsign-approver, certctl
#   WORK_DIR  scratch directory (default: a new mktemp -d, removed on exit)
# Prints `NETNS: ...` progress lines and `NETNS PASS` at the end; exits
# non-zero with `NETNS FAIL: <why>` otherwise. Namespaces and processes are
# removed on exit whatever happens.
set -euo pipefail

fail() {
  printf 'NETNS FAIL: %s\n' "$*" >&2
  exit 1
}
step() { printf 'NETNS: %s\n' "$*"; }

[ $# -ge 1 ] || fail "usage: $0 BIN_DIR [WORK_DIR]"
BIN=$(cd "$1" && pwd)
[ "$(id -u)" = 0 ] || fail "must run as root (it creates network namespaces)"
for tool in ip openssl timeout base64 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required (apt-get install iproute2 openssl coreutils)"
done
for b in certsign-signer certsign-approver certctl; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b not found (cargo build --bins)"
done

if [ $# -ge 2 ]; then
  WORK=$(mkdir -p "$2" && cd "$2" && pwd)
  OWN_WORK=0
else
  WORK=$(mktemp -d)
  OWN_WORK=1
fi

# Unique per run, so parallel runs never share a namespace name.
ID="$$-$RANDOM"
NS_SIG="certsign-sig-$ID"
NS_APP="certsign-app-$ID"
NS_OUT="certsign-out-$ID"
NAMESPACES=("$NS_SIG" "$NS_APP" "$NS_OUT")
PIDS=()

cleanup() {
  local rc=$? pid ns
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  for ns in "${NAMESPACES[@]}"; do
    if ip netns list | grep -qw -- "$ns"; then
      # Anything still running inside dies with its namespace.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/*.log; do
      [ -f "$f" ] && { printf -- '--- %s\n' "$f" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

step "namespaces $NS_SIG $NS_APP $NS_OUT"
for ns in "${NAMESPACES[@]}"; do
  ip netns add "$ns"
  in_ns "$ns" ip link set lo up
done
# Both ends are created directly inside the namespaces: no interface ever
# appears in the host's namespace, so parallel runs cannot collide.
ip link add sig0 netns "$NS_SIG" type veth peer name app0 netns "$NS_APP"
ip link add out0 netns "$NS_OUT" type veth peer name app1 netns "$NS_APP"
in_ns "$NS_SIG" ip addr add 10.77.0.1/24 dev sig0
in_ns "$NS_APP" ip addr add 10.77.0.2/24 dev app0
in_ns "$NS_APP" ip addr add 10.78.0.1/24 dev app1
in_ns "$NS_OUT" ip addr add 10.78.0.2/24 dev out0
in_ns "$NS_SIG" ip link set sig0 up
in_ns "$NS_APP" ip link set app0 up
in_ns "$NS_APP" ip link set app1 up
in_ns "$NS_OUT" ip link set out0 up
# The outsider even gets a route to the signer's subnet via the approver's
# host: only the approver host's refusal to forward keeps it out.
in_ns "$NS_OUT" ip route add 10.77.0.0/24 via 10.78.0.1
in_ns "$NS_APP" sysctl -q -w net.ipv4.ip_forward=0
[ "$(in_ns "$NS_APP" cat /proc/sys/net/ipv4/ip_forward)" = 0 ] || fail "could not turn forwarding off in $NS_APP"

step "init the deployment for 10.77.0.1:7443 (signer) and 10.78.0.1:8443 (approver)"
"$BIN/certsign-signer" init --dir "$WORK/pki" --signer-listen 10.77.0.1:7443 --approver-listen 10.78.0.1:8443 >"$WORK/init.log" 2>&1 ||
  fail "certsign-signer init failed: $(tail -n 5 "$WORK/init.log")"
# jane has no certificate yet: she submits with a bootstrap token (the
# approver keeps only its hash), and the admin, not the requestor, approves.
TOKEN_ID=$(openssl rand -hex 3)
TOKEN_SECRET=$(openssl rand -hex 8)
cat >>"$WORK/pki/approver/approver.toml" <<EOF

[[bootstrap_tokens]]
id = "$TOKEN_ID"
secret_sha256 = "$(printf %s "$TOKEN_SECRET" | sha256sum | cut -d' ' -f1)"
expires = "$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)"
signer_names = ["kubernetes.io/kube-apiserver-client"]
max_uses = 5
EOF
TOKEN="$TOKEN_ID.$TOKEN_SECRET"

# Start NAME in NS with its config, wait for its `listening on` line.
start() {
  local ns=$1 name=$2 log="$WORK/$2.log" pid waited=0
  in_ns "$ns" "$BIN/certsign-$name" serve --config "$WORK/pki/$name/$name.toml" >"$log" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  until grep -q 'listening on' "$log"; do
    kill -0 "$pid" 2>/dev/null || fail "certsign-$name exited during startup: $(tail -n 5 "$log")"
    # A bound, not a timing assertion: a daemon that never comes up fails
    # the test instead of hanging it.
    [ "$waited" -lt 600 ] || fail "certsign-$name did not start within 60s"
    sleep 0.1
    waited=$((waited + 1))
  done
  step "$name in $ns: $(grep -m1 'listening on' "$log")"
}
start "$NS_SIG" signer
start "$NS_APP" approver

# connect NS HOST PORT: succeeds if a TCP connection is accepted.
connect() {
  in_ns "$1" timeout 5 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

step "reachability"
connect "$NS_APP" 10.77.0.1 7443 || fail "the approver's namespace cannot reach the signer at 10.77.0.1:7443"
connect "$NS_OUT" 10.78.0.1 8443 || fail "the outsider cannot reach the approver at 10.78.0.1:8443"
if connect "$NS_OUT" 10.77.0.1 7443; then
  fail "the outsider reached the signer at 10.77.0.1:7443"
fi
step "outsider -> signer 10.77.0.1:7443: refused/unreachable (as it must be)"
step "outsider -> approver 10.78.0.1:8443: reachable"

step "full flow from the outsider's namespace"
export CERTCTL_CONFIG="$WORK/pki/admin/certctl.toml"
cd "$WORK"
in_ns "$NS_OUT" openssl genrsa -out jane.key 3072 2>/dev/null
in_ns "$NS_OUT" openssl req -new -key jane.key -out jane.csr -subj "/CN=jane/O=dev"
cat >jane.yaml <<EOF
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: jane
spec:
  request: $(base64 <jane.csr | tr -d '\n')
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: 86400
  usages:
  - client auth
EOF
in_ns "$NS_OUT" "$BIN/certctl" --token "$TOKEN" apply -f jane.yaml || fail "certctl apply failed"
in_ns "$NS_OUT" "$BIN/certctl" get csr jane | tee get-pending.txt
grep -q Pending get-pending.txt || fail "the new request is not Pending"
in_ns "$NS_OUT" "$BIN/certctl" certificate approve jane || fail "certctl certificate approve failed"
in_ns "$NS_OUT" timeout 120 "$BIN/certctl" --token "$TOKEN" certificate wait jane --timeout 100s --out jane.crt ||
  fail "certctl certificate wait failed"
in_ns "$NS_OUT" "$BIN/certctl" get csr jane | tee get-issued.txt
grep -q 'Approved,Issued' get-issued.txt || fail "the request is not Approved,Issued"
openssl verify -CAfile "$WORK/pki/ca.crt" jane.crt || fail "openssl does not accept the issued certificate"
openssl x509 -in jane.crt -noout -subject | grep -q 'CN *= *jane' || fail "the certificate does not name jane"

# The signer is still up and still unreachable from outside after the flow.
connect "$NS_APP" 10.77.0.1 7443 || fail "the signer is no longer reachable from the approver's namespace"
if connect "$NS_OUT" 10.77.0.1 7443; then
  fail "the outsider reached the signer at 10.77.0.1:7443"
fi
step "signer journal has $(wc -l <"$WORK/pki/signer/journal.jsonl") lines"
printf 'NETNS PASS\n'
