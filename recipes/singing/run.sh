#!/usr/bin/env bash
# Singing voice: continue pretraining wav2vec_large on your singing audio, then measure how well each
# checkpoint's uncertainty ranks quality on VoiceMOS 2023 track 2 (SVCC 2023 singing voice conversion).
# See recipes/singing/README.md; every step is in recipes/run_recipe.sh.
#
#   recipes/singing/run.sh --audio /data/my-singing-audio --init wav2vec_large.pt \
#       --eval vmc2023:/data/voicemos2023:2 \
#       -- --partition PARTITION --account ACCOUNT --nodes 1 --gpus-per-node 4 --time 2-00:00:00 \
#          --eval-gpus 1 --eval-time 2:00:00
#   recipes/singing/run.sh --smoke           # minutes, through SLURM (add --local to skip SLURM)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${TOOLKIT_SHARED:-$HERE/../../../shared}
export DOMAIN=singing
# Smoke mode only: real singing audio from ../shared and a stand-in MOS set (the real VoiceMOS 2023 track 2 (SVCC 2023 singing voice conversion)
# cannot be shipped); its 24 clips check that every step runs, not the method.
export SMOKE_AUDIO=$SHARED/data/speech/singing
export SMOKE_EVAL=yourtts:$SHARED/data/mos/yourtts:PT
exec "$HERE/../run_recipe.sh" "$@"
