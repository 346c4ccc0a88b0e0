#!/usr/bin/env bash
# (4) create -> approve -> issued through the approver, on SQLite and on
# PostgreSQL (the local cluster; role and database made as tests/run.sh does).
# BATCH=100 (the default): the admin signs one batch statement per 100
# requests; BATCH=1 signs one statement per request.
source "$(dirname "$0")/common.sh"
args=(--concurrency "${CONCURRENCY:-256}" --connections "${CONNECTIONS:-4}" --secs "${SECS:-20}" --threads "${THREADS:-1}" --batch "${BATCH:-100}")
echo "## SQLite"
"$bench" pipeline "${args[@]}"
if command -v pg_ctlcluster >/dev/null; then
  pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_ctlcluster "$pg_version" main start 2>/dev/null || true
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='certsign'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"CREATE ROLE certsign LOGIN SUPERUSER PASSWORD 'certsign'\""
  su postgres -c "dropdb --if-exists certsign_bench" && su postgres -c "createdb -O certsign certsign_bench"
  echo "## PostgreSQL $pg_version"
  "$bench" pipeline "${args[@]}" --database-url "postgres://certsign:certsign@127.0.0.1:5432/certsign_bench"
fi
