#!/usr/bin/env bash
# English speech (the paper's zero-shot setting): continue pretraining wav2vec_large on your english audio, then measure how well each
# checkpoint's uncertainty ranks quality on VoiceMOS 2022 main track (BVCC).
# See recipes/english/README.md; every step is in recipes/run_recipe.sh.
#
#   recipes/english/run.sh --audio /data/my-english-audio --init wav2vec_large.pt \
#       --eval bvcc:/data/voicemos2022/DATA:test \
#       -- --partition PARTITION --account ACCOUNT --nodes 1 --gpus-per-node 4 --time 2-00:00:00 \
#          --eval-gpus 1 --eval-time 2:00:00
#   recipes/english/run.sh --smoke           # minutes, through SLURM (add --local to skip SLURM)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${TOOLKIT_SHARED:-$HERE/../../../shared}
export DOMAIN=english
# Smoke mode only: real english audio from ../shared and a stand-in MOS set (the real VoiceMOS 2022 main track (BVCC)
# cannot be shipped); its 24 clips check that every step runs, not the method.
export SMOKE_AUDIO=$SHARED/data/speech/en
export SMOKE_EVAL=yourtts:$SHARED/data/mos/yourtts:EN
exec "$HERE/../run_recipe.sh" "$@"
