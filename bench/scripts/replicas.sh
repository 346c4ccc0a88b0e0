#!/usr/bin/env bash
# Replicas (issue 9): the pipeline (create -> approve -> issued) through 1, 2
# and 3 approver replicas sharing one PostgreSQL database (a fresh database
# per run), then the time another replica takes to take over the claims of
# one killed with -9 (the replica test, with the signer timeout given).
source "$(dirname "$0")/common.sh"
args=(--concurrency "${CONCURRENCY:-256}" --connections "${CONNECTIONS:-4}" --secs "${SECS:-20}")
pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_ctlcluster "$pg_version" main start 2>/dev/null || true
su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='certsign'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE certsign LOGIN SUPERUSER PASSWORD 'certsign'\""
for n in ${REPLICAS:-1 2 3}; do
  su postgres -c "dropdb --if-exists certsign_bench_replicas" && su postgres -c "createdb -O certsign certsign_bench_replicas"
  echo "## PostgreSQL $pg_version, $n replica(s)"
  "$bench" pipeline "${args[@]}" --replicas "$n" \
    --database-url "postgres://certsign:certsign@127.0.0.1:5432/certsign_bench_replicas"
done
su postgres -c "dropdb --if-exists certsign_bench_replicas"
# Takeover: lease = endpoints x (signer timeout + 6 s) + 5 s.
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='certsign_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O certsign certsign_test"
for t in ${TAKEOVER_TIMEOUTS:-2s 30s}; do
  echo "## takeover of a killed replica's claim, signer timeout $t"
  CERTSIGN_TEST_DATABASE_URL="postgres://certsign:certsign@127.0.0.1:5432/certsign_test" \
  CERTSIGN_REPLICAS_SIGNER_TIMEOUT="$t" \
    cargo test -q -p certsign-tests --test replicas a_dead_replicas_claim -- --nocapture 2>&1 | grep FIGURES
done
