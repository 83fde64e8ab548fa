#!/usr/bin/env bash
# Run the whole test suite on this machine, set-up included:
#   1. .venv with the toolkit, test tools, fairseq and the reference predictors
#      (scripts/setup.sh --test --references)
#   2. a real SLURM cluster on localhost (2 virtual nodes), stopped again on exit
#   3. ruff, then pytest
# Extra arguments go to pytest, e.g. `scripts/test.sh -k parity`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --test --references

# espeak-ng: the synthetic-speech fallback that one test exercises (Piper is the default voice).
if ! command -v espeak-ng >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng; } \
    >/dev/null 2>&1 || echo "test.sh: espeak-ng could not be installed; its fallback test will skip" >&2
fi

CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/toolkit-slurm.XXXXXX")
stop_cluster() { tests/slurm/local_cluster.sh stop "$CLUSTER_DIR" >/dev/null 2>&1 || true; }
trap stop_cluster EXIT
if SLURM_LOCAL_NODES=2 tests/slurm/local_cluster.sh start "$CLUSTER_DIR" >/dev/null; then
  export SLURM_CONF="$CLUSTER_DIR/etc/slurm.conf"
  echo "test.sh: local SLURM cluster up (SLURM_CONF=$SLURM_CONF)"
else
  echo "test.sh: could not start the local SLURM cluster; SLURM tests will say why they skip" >&2
fi

export WANDB_MODE=offline WANDB_SILENT=true
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
