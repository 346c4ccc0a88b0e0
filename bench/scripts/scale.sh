#!/usr/bin/env bash
# (5) An approver holding 1,000,000 requests (SQLite filled by bulk SQL):
# start-up, memory, filtered paged list and get latency. Needs ~1.5 GB of
# temp space; KEEP=dir keeps (and on re-runs reuses) the filled store.
source "$(dirname "$0")/common.sh"
"$bench" scale --requests "${REQUESTS:-1000000}" --calls "${CALLS:-2000}" ${KEEP:+--keep "$KEEP"}
