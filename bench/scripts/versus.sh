#!/usr/bin/env bash
# (2)+(3) Sign over mTLS (durable journal) vs cfssl serve (plain HTTP, and
# mutual TLS from the same CA), alternating, same CSR, same P-256 CA key,
# same concurrency, one run; (1) in process in every round for the ratio;
# CPU per call of each server, the load generator and the rest of the machine.
# BATCH=100: the signer gets batched Sign calls of 100 requests, each batch
# approved by one signed batch statement, and (1) issues batch-approved
# requests (the statement verified once, cached); rates count certificates.
source "$(dirname "$0")/common.sh"
command -v cfssl >/dev/null || apt-get install -y golang-cfssl >&2
"$bench" versus --concurrency "${CONCURRENCY:-64}" --connections "${CONNECTIONS:-4}" \
  --secs "${SECS:-8}" --rounds "${ROUNDS:-3}" --pool "${POOL:-40000}" --threads "${THREADS:-1}" \
  --batch "${BATCH:-1}"
