#!/usr/bin/env bash
# (1) The limit: in-process issuance per CA key type, 1 thread and all cores.
source "$(dirname "$0")/common.sh"
"$bench" issue --key-types "${KEY_TYPES:-ecdsa-p256,ed25519,rsa2048,rsa}" --secs "${SECS:-5}"
