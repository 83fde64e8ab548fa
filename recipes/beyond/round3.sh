#!/usr/bin/env bash
# Issue 15, round 3 (docs/results.md section 6, "Round 3"): the `prediction` family on the selection
# sets, then, only once the choice is committed, on a fresh real-voice degradation set.
#
#   recipes/beyond/round3.sh select    # selection: demo suite + YourTTS EN (400 clips)
#   recipes/beyond/round3.sh testset   # build the fresh set (VCTK p226-p228 + 30 seeded LJSpeech clips)
#   recipes/beyond/round3.sh test      # score it: candidates, p_pos.mean, combo.worse, controls
#   recipes/beyond/round3.sh pt        # reported after the choice: all 530 clips of YourTTS PT
#   recipes/beyond/round3.sh fillets   # a sixth fresh set: Czech and Dutch game dialogue (Debian fillets-ng)
#
# WORK (default runs/beyond/round3) receives everything. The fresh set's audio comes from two public
# repositories brought onto this machine with the library's `fetch` (never into this repository):
# VCTK=.../auspicious3000+autovc/repo and LJ=.../PrernaSocity+lj_speech_dataset_part_1/repo (git dirs).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOOLKIT=${TOOLKIT:-toolkit}
PYTHON=${PYTHON:-python}
WORK=${WORK:-runs/beyond/round3}
SHARED=${TOOLKIT_SHARED:-$REPO/../shared}
VCTK=${VCTK:-/work/.mirror/auspicious3000+autovc/repo}
LJ=${LJ:-/work/.mirror/PrernaSocity+lj_speech_dataset_part_1/repo}
# shellcheck source=recipes/beyond/lib.sh
source "$HERE/lib.sh"
mkdir -p "$WORK"

case ${1:?select, testset, test, pt or fillets} in
  select)
    [ -f "$WORK/demo/degraded/manifest.csv" ] || "$TOOLKIT" demo --output "$WORK/demo"
    for set in demo yourtts:EN; do
      limit=(); [ "$set" = yourtts:EN ] && limit=(--limit 400)
      "$PYTHON" "$HERE/compare.py" "$set" "${limit[@]}" --demo "$WORK/demo" --shared "$SHARED" --checkpoint "$MODEL" \
          --extension combo --extension prediction --output "$WORK/compare" | tee "$WORK/selection_${set%%:*}.md"
    done ;;
  testset)
    clean=$WORK/fresh-clean
    rm -rf "$clean" && mkdir -p "$clean"
    # VCTK p226-p228, every recording in the mirror (p225 is left out: one of its recordings is in the
    # reference audio of the shipped codebook)
    git -C "$VCTK" archive HEAD -- wavs/p226 wavs/p227 wavs/p228 | tar -x -C "$clean"
    # 30 LJSpeech recordings, a seeded draw (numpy seed 0) from the sorted list of the mirror's wavs
    mapfile -t lj < <(git -C "$LJ" ls-tree -r --name-only HEAD | grep -E '^LJSpeech-1.1/wavs/.*\.wav$' | sort |
      "$PYTHON" -c 'import sys, numpy as np; names = sys.stdin.read().split(); print("\n".join(sorted(np.random.default_rng(0).choice(names, 30, replace=False))))')
    git -C "$LJ" archive HEAD -- "${lj[@]}" | tar -x -C "$clean"
    find "$clean" -name '*.wav' | sort > "$WORK/fresh-clean.txt"
    echo "$(wc -l < "$WORK/fresh-clean.txt") clean recordings in $clean"
    "$TOOLKIT" degrade "$clean" --output "$WORK/fresh" --levels 4 --seed 0 --no-progress ;;
  test)
    score fresh "$WORK/fresh/manifest.csv" "$WORK/fresh-results" "$WORK/cache" --extension combo \
        --extension prediction --control random-init --control acoustic | tee "$WORK/test_fresh.md" ;;
  pt)
    "$PYTHON" "$HERE/compare.py" yourtts:PT --shared "$SHARED" --checkpoint "$MODEL" --extension combo \
        --extension prediction --output "$WORK/compare" | tee "$WORK/test_pt.md" ;;
  fillets)
    # FILLETS: a folder holding fillets-ng-data-cs and -nl unpacked as cs/ and nl/ (apt-get download, dpkg -x)
    FILLETS=${FILLETS:-/tmp/fillets}
    for lang in cs nl; do
      clean=$WORK/fillets-$lang-clean
      rm -rf "$clean" && mkdir -p "$clean"
      # 30 recordings of 2-8 s, a seeded draw (numpy seed 0) from the sorted list of such files
      "$PYTHON" - "$FILLETS/$lang" "$clean" <<'PY'
import shutil, sys
from pathlib import Path
import numpy as np
import soundfile as sf
root, out = Path(sys.argv[1]), Path(sys.argv[2])
files = [p for p in sorted(root.rglob("*.ogg")) if 2.0 <= sf.info(p).duration <= 8.0]
for p in sorted(np.random.default_rng(0).choice(np.array(files, dtype=object), 30, replace=False)):
    shutil.copy(p, out / f"{p.parent.parent.name}-{p.name}")  # the level folder keeps names unique
PY
      "$TOOLKIT" degrade "$clean" --output "$WORK/fillets-$lang" --levels 4 --seed 0 --no-progress
      score "$lang" "$WORK/fillets-$lang/manifest.csv" "$WORK/fillets-$lang-results" "$WORK/cache" --extension combo \
          --extension prediction --control random-init --control acoustic | tee "$WORK/test_fillets_$lang.md"
    done ;;
  *) echo "round3.sh: unknown step $1 (select, testset, test, pt or fillets)" >&2; exit 2 ;;
esac
