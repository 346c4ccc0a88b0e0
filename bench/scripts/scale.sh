#!/usr/bin/env bash
# (5) An approver holding 1,000,000 requests, on SQLite and then on
# PostgreSQL (the local cluster; role and database made as tests/run.sh
# does), each filled by bulk SQL: start-up, memory, filtered paged list and
# get latency. Needs ~1.5 GB of temp space and as much in PostgreSQL;
# KEEP=dir keeps (and on re-runs reuses) the filled stores (SQLite in dir,
# the PostgreSQL run's init directory in dir.pg and its database
# certsign_scale). BACKENDS="sqlite postgres" picks the runs.
source "$(dirname "$0")/common.sh"
args=(--requests "${REQUESTS:-1000000}" --calls "${CALLS:-2000}")
for backend in ${BACKENDS:-sqlite postgres}; do
  case $backend in
  sqlite)
    echo "## SQLite"
    "$bench" scale "${args[@]}" ${KEEP:+--keep "$KEEP"}
    ;;
  postgres)
    command -v pg_ctlcluster >/dev/null || { echo "## PostgreSQL: not installed, skipped"; continue; }
    pg_version=$(ls /usr/lib/postgresql | sort -n | tail -1)
    pg_ctlcluster "$pg_version" main start 2>/dev/null || true
    su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='certsign'\"" | grep -q 1 ||
      su postgres -c "psql -qc \"CREATE ROLE certsign LOGIN SUPERUSER PASSWORD 'certsign'\""
    if [ -z "${KEEP:-}" ]; then
      su postgres -c "dropdb --if-exists certsign_scale"
    fi
    su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='certsign_scale'\"" | grep -q 1 ||
      su postgres -c "createdb -O certsign certsign_scale"
    echo "## PostgreSQL $pg_version"
    "$bench" scale "${args[@]}" ${KEEP:+--keep "$KEEP.pg"} \
      --database-url "postgres://certsign:certsign@127.0.0.1:5432/certsign_scale"
    [ -n "${KEEP:-}" ] || su postgres -c "dropdb --if-exists certsign_scale"
    ;;
  *) echo "BACKENDS: unknown backend $backend (use sqlite, postgres)" >&2; exit 2 ;;
  esac
done
