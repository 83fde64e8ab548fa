#!/usr/bin/env bash
# Issue 15, round 4 (docs/results.md section 6, "Round 4"): the `probe` family, chosen on the real-voice
# sets of round 3, then, only once the choice is committed, tested on a fresh set (TESS) and YourTTS PT.
#
#   recipes/beyond/round4.sh select    # the probes on round 3's real-voice sets (VCTK/LJSpeech, Czech, Dutch)
#   recipes/beyond/round4.sh choose    # the rule: the extension measure with the best mean over the three sets
#   recipes/beyond/round4.sh testset   # build the fresh set: 60 seeded TESS recordings, degraded
#   recipes/beyond/round4.sh test      # score it: every candidate, p_pos.mean, the controls
#   recipes/beyond/round4.sh pt        # all 530 clips of YourTTS PT (the stretch target)
#
# ROUND3 (default runs/beyond/round3) must hold round 3's sets and results (`round3.sh testset test
# fillets`). WORK (default runs/beyond/round4) receives everything. TESS comes from a public repository
# brought onto this machine with the library's `fetch` (never into this repository): TESS=.../repo (git dir).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOOLKIT=${TOOLKIT:-toolkit}
PYTHON=${PYTHON:-python}
WORK=${WORK:-runs/beyond/round4}
ROUND3=${ROUND3:-runs/beyond/round3}
SHARED=${TOOLKIT_SHARED:-$REPO/../shared}
TESS=${TESS:-/work/.mirror/deepxzy+Toronto-emotional-speech-set/repo}
# shellcheck source=recipes/beyond/lib.sh
source "$HERE/lib.sh"
mkdir -p "$WORK"

case ${1:?select, choose, testset, test or pt} in
  select)
    for pair in "${SETS[@]}"; do
      folder=${pair%%:*} name=${pair##*:}
      score "$name" "$ROUND3/$folder/manifest.csv" "$WORK/select-$name" "$ROUND3/cache" --extension probe | tee "$WORK/select_$name.md"
    done ;;
  choose)
    args=()
    for pair in "${SETS[@]}"; do
      folder=${pair%%:*} name=${pair##*:}
      args+=("$ROUND3/$folder-results/severity_$name.csv" "$WORK/select-$name/severity_$name.csv")
    done
    "$PYTHON" "$HERE/choose.py" "${args[@]}" | tee "$WORK/choice.md" ;;
  testset)
    clean=$WORK/tess-clean
    rm -rf "$clean" && mkdir -p "$clean"
    # 60 recordings, a seeded draw (numpy seed 0) from the sorted list of the mirror's wavs
    mapfile -t tess < <(git -C "$TESS" ls-tree -r --name-only HEAD | grep -iE '\.wav$' | sort |
      "$PYTHON" -c 'import sys, numpy as np; names = sys.stdin.read().split("\n")[:-1]; print("\n".join(sorted(np.random.default_rng(0).choice(names, 60, replace=False))))')
    git -C "$TESS" archive HEAD -- "${tess[@]}" | tar -x -C "$clean"
    find "$clean" -iname '*.wav' | sort > "$WORK/tess-clean.txt"
    echo "$(wc -l < "$WORK/tess-clean.txt") clean recordings in $clean"
    "$TOOLKIT" degrade "$clean" --output "$WORK/tess" --levels 4 --seed 0 --no-progress ;;
  test)
    score tess "$WORK/tess/manifest.csv" "$WORK/tess-results" "$ROUND3/cache" --extension combo --extension prediction \
        --extension probe --control random-init --control acoustic | tee "$WORK/test_tess.md" ;;
  pt)
    "$PYTHON" "$HERE/compare.py" yourtts:PT --shared "$SHARED" --checkpoint "$MODEL" --extension combo \
        --extension probe --output "$WORK/compare" | tee "$WORK/test_pt.md" ;;
  *) echo "round4.sh: unknown step $1 (select, choose, testset, test or pt)" >&2; exit 2 ;;
esac
