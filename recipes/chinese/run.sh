#!/usr/bin/env bash
# Mandarin Chinese speech: continue pretraining wav2vec_large on your chinese audio, then measure how well each
# checkpoint's uncertainty ranks quality on VoiceMOS 2022 OOD track (Blizzard 2019) and VoiceMOS 2023 track 3 (noisy TMHINT-QI).
# See recipes/chinese/README.md; every step is in recipes/run_recipe.sh.
#
#   recipes/chinese/run.sh --audio /data/my-chinese-audio --init wav2vec_large.pt \
#       --eval vmc2022-ood:/data/voicemos2022-ood/DATA:test \
#       --eval vmc2023:/data/voicemos2023:3 \
#       -- --partition PARTITION --account ACCOUNT --nodes 1 --gpus-per-node 4 --time 2-00:00:00 \
#          --eval-gpus 1 --eval-time 2:00:00
#   recipes/chinese/run.sh --smoke           # minutes, through SLURM (add --local to skip SLURM)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${TOOLKIT_SHARED:-$HERE/../../../shared}
export DOMAIN=chinese
# Smoke mode only: real chinese audio from ../shared and a stand-in MOS set (the real VoiceMOS 2022 OOD track (Blizzard 2019) and VoiceMOS 2023 track 3 (noisy TMHINT-QI)
# cannot be shipped); its 24 clips check that every step runs, not the method.
export SMOKE_AUDIO=$SHARED/data/speech/zh
export SMOKE_EVAL=yourtts:$SHARED/data/mos/yourtts:PT
exec "$HERE/../run_recipe.sh" "$@"
