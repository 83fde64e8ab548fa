#!/usr/bin/env bash
# French speech: continue pretraining wav2vec_large on your french audio, then measure how well each
# checkpoint's uncertainty ranks quality on VoiceMOS 2023 track 1 (Blizzard 2023 French TTS).
# See recipes/french/README.md; every step is in recipes/run_recipe.sh.
#
#   recipes/french/run.sh --audio /data/my-french-audio --init wav2vec_large.pt \
#       --eval vmc2023:/data/voicemos2023:1 \
#       -- --partition PARTITION --account ACCOUNT --nodes 1 --gpus-per-node 4 --time 2-00:00:00 \
#          --eval-gpus 1 --eval-time 2:00:00
#   recipes/french/run.sh --smoke           # minutes, through SLURM (add --local to skip SLURM)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${TOOLKIT_SHARED:-$HERE/../../../shared}
export DOMAIN=french
# Smoke mode only: real french audio from ../shared and a stand-in MOS set (the real VoiceMOS 2023 track 1 (Blizzard 2023 French TTS)
# cannot be shipped); its 24 clips check that every step runs, not the method.
export SMOKE_AUDIO=$SHARED/data/speech/fr
export SMOKE_EVAL=yourtts:$SHARED/data/mos/yourtts:PT
exec "$HERE/../run_recipe.sh" "$@"
