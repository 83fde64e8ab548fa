#!/usr/bin/env bash
# Issue 15, "Beyond the paper": every step behind docs/results.md section 6, top to bottom.
#
#   recipes/beyond/run.sh            # WORK (default runs/beyond) receives everything
#
# 1. the demo's graded set (synthetic Piper speech; only its degraded/manifest.csv is used here),
# 2. the reference bank of the embedded default model, from CLEAN REAL speech only,
# 3. the hypothesis test (negatives from the utterance / clean twin / bank; half-degraded clips),
# 4. every candidate with controls on the selection sets (demo suite, YourTTS EN 400 clips),
# 5. the same on the test set (YourTTS PT), run only after the choice was written down.
# Round 3 (the prediction family, and a fresh VCTK/LJSpeech test set) is recipes/beyond/round3.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOOLKIT=${TOOLKIT:-toolkit}
PYTHON=${PYTHON:-python}
WORK=${WORK:-runs/beyond}
SHARED=${TOOLKIT_SHARED:-$REPO/../shared}
MODEL=$REPO/toolkit/assets/default/model.pt

[ -f "$WORK/demo/degraded/manifest.csv" ] || "$TOOLKIT" demo --output "$WORK/demo"
"$TOOLKIT" bank "$SHARED/data/speech/en" --checkpoint "$MODEL" --output "$WORK/bank.pt"
"$PYTHON" "$HERE/hypothesis.py" "$WORK/demo/degraded/manifest.csv" --bank "$WORK/bank.pt" --checkpoint "$MODEL" \
    --output "$WORK/hypothesis" | tee "$WORK/hypothesis.md"
"$PYTHON" "$HERE/compare.py" demo --demo "$WORK/demo" --bank "$WORK/bank.pt" --checkpoint "$MODEL" \
    --output "$WORK/compare" | tee "$WORK/selection_demo.md"
"$PYTHON" "$HERE/compare.py" yourtts:EN --limit 400 --shared "$SHARED" --bank "$WORK/bank.pt" --checkpoint "$MODEL" \
    --output "$WORK/compare" | tee "$WORK/selection_en.md"
"$PYTHON" "$HERE/compare.py" yourtts:PT --shared "$SHARED" --bank "$WORK/bank.pt" --checkpoint "$MODEL" \
    --output "$WORK/compare" | tee "$WORK/test_pt.md"
