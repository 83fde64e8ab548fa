#!/usr/bin/env bash
# Pretrain the embedded default model again: the `small` preset (1.3M parameters) on real English
# speech, on CPU, then write it as WORK/model.pt for comparison with the shipped default, and with
# INSTALL=1 install it as toolkit/assets/default/model.pt.
#
#   recipes/default/run.sh AUDIO_FOLDER... [-- EXTRA PRETRAIN OPTIONS]
#   recipes/default/run.sh /data/LibriSpeech/train-clean-5 /data/Resemblyzer/audio_data ../shared/data/speech
#
# The shipped model used exactly this, with the folders listed in toolkit/assets/default/MODEL_CARD.md.
# Environment: WORK (default runs/default) holds the manifest, shards and the run; STEPS (default
# 20000; the schedule's length) and MAX_MINUTES (default 0 = no limit) bound the training. INSTALL=1
# replaces the shipped default; without it nothing in the repository changes. Compare first: a
# retrain of 3,750 steps scored below the shipped model on the demo's protocol (docs/results.md 7g).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOOLKIT=${TOOLKIT:-toolkit}
WORK=${WORK:-runs/default}
STEPS=${STEPS:-20000}
MAX_MINUTES=${MAX_MINUTES:-0}
INSTALL=${INSTALL:-0}
SHARED=${TOOLKIT_SHARED:-$REPO/../shared}

folders=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do folders+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#folders[@]} -gt 0 ] || { echo "usage: $0 AUDIO_FOLDER... [-- PRETRAIN OPTIONS]" >&2; exit 2; }

# 1. Manifest, excluding every clip of the evaluation set the model card reports (leakage guard).
exclude=()
[ -d "$SHARED/data/mos/yourtts/audio" ] && exclude=(--exclude-eval-set "$SHARED/data/mos/yourtts/audio")
"$TOOLKIT" manifest "${folders[@]}" --domain en "${exclude[@]}" --output "$WORK/manifest.tsv"

# 2. 16 kHz shards (int16 by default: the fastest to stream).
"$TOOLKIT" shard "$WORK/manifest.tsv" --output "$WORK/shards" --max-count 500

# 3. Pretrain on CPU (toolkit/configs/pretrain/small.yaml: 8 x 2.5 s crops, Adam 5e-4, clipping).
limit=()
[ "$MAX_MINUTES" != 0 ] && limit=(--trainer.max_time "{\"minutes\": ${MAX_MINUTES}}")
"$TOOLKIT" pretrain --config "$REPO/toolkit/configs/pretrain/small.yaml" \
    --data.train_shards "$WORK/shards" --trainer.max_steps "$STEPS" "${limit[@]}" \
    --trainer.default_root_dir "$WORK/run" --checkpoint.every_n_steps 250 --checkpoint.keep_last 40 "$@"

# 4. The newest checkpoint as a self-describing toolkit model, WORK/model.pt; installed only with INSTALL=1.
newest=$("$TOOLKIT" submit newest-checkpoint "$WORK/run")
target="$WORK/model.pt"
[ "$INSTALL" = 1 ] && target="$REPO/toolkit/assets/default/model.pt"
python - "$newest" "$target" <<'PY'
import sys
from toolkit.models.checkpoint import load_checkpoint, save_model
model, info = load_checkpoint(sys.argv[1])
save_model(sys.argv[2], model, step=info["step"], training=info["training"], extra={"source": sys.argv[1]})
print(f"wrote {sys.argv[1]} (step {info['step']}) as {sys.argv[2]}")
PY
if [ "$INSTALL" = 1 ]; then
    echo "Installed. The shipped codebooks (toolkit/assets/default/codebook*.pt) belong to the old weights:"
    echo "remake them with \`toolkit bank\` (MODEL_CARD.md), then evaluate (docs/results.md) and update MODEL_CARD.md."
else
    echo "Compare it with the shipped default on the same clips before installing, e.g.:"
    echo "  toolkit demo --checkpoint $target --output $WORK/demo-new   (and toolkit demo --output $WORK/demo-shipped)"
    echo "To install it: cp $target $REPO/toolkit/assets/default/model.pt, then remake the codebooks there"
    echo "with \`toolkit bank\` (MODEL_CARD.md) and update MODEL_CARD.md. (INSTALL=1 installs at the end of a run.)"
fi
