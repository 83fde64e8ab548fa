#!/usr/bin/env bash
# Issue 15, round 5 (docs/results.md section 6, "Round 5"): the `dynamics` family on round 3's real-voice
# sets, the rule of round 4, then, only once the choice is committed, a fresh test on phone prompts in
# Spanish, Italian and Russian.
#
#   recipes/beyond/round5.sh select    # the dynamics on round 3's real-voice sets (VCTK/LJSpeech, Czech, Dutch)
#   recipes/beyond/round5.sh choose    # the rule over every extension measure of rounds 2-5
#   recipes/beyond/round5.sh testset   # build the fresh set: 20 seeded prompts per language, degraded
#   recipes/beyond/round5.sh test      # score it: the candidates, combo, p_pos.mean, the controls
#
# ROUND3 and ROUND4 (default runs/beyond/round3, round4) must hold those rounds' sets and results.
# WORK (default runs/beyond/round5) receives everything. ASTERISK: a folder holding the Debian packages
# asterisk-core-sounds-{es,it,ru}-g722 unpacked as es/, it/ and ru/ (apt-get download, dpkg -x); ffmpeg
# (Debian) decodes their G.722.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOOLKIT=${TOOLKIT:-toolkit}
PYTHON=${PYTHON:-python}
WORK=${WORK:-runs/beyond/round5}
ROUND3=${ROUND3:-runs/beyond/round3}
ROUND4=${ROUND4:-runs/beyond/round4}
ASTERISK=${ASTERISK:-/tmp/asterisk}
LANGS=(es it ru)
# shellcheck source=recipes/beyond/lib.sh
source "$HERE/lib.sh"
mkdir -p "$WORK"

case ${1:?select, choose, testset or test} in
  select)
    for pair in "${SETS[@]}"; do
      folder=${pair%%:*} name=${pair##*:}
      score "$name" "$ROUND3/$folder/manifest.csv" "$WORK/select-$name" "$ROUND3/cache" --extension dynamics | tee "$WORK/select_$name.md"
    done ;;
  choose)
    args=()
    for pair in "${SETS[@]}"; do
      folder=${pair%%:*} name=${pair##*:}
      args+=("$ROUND3/$folder-results/severity_$name.csv" "$ROUND4/select-$name/severity_$name.csv"
             "$WORK/select-$name/severity_$name.csv")
    done
    "$PYTHON" "$HERE/choose.py" "${args[@]}" | tee "$WORK/choice.md" ;;
  testset)
    for lang in "${LANGS[@]}"; do
      clean=$WORK/asterisk-$lang-clean
      rm -rf "$clean" && mkdir -p "$clean"
      # every prompt decoded to 16-kHz wav, then 20 of those lasting 2-8 s, a seeded draw (numpy seed 0)
      all=$WORK/asterisk-$lang-all
      rm -rf "$all" && mkdir -p "$all"
      find "$ASTERISK/$lang" -name '*.g722' | sort | while read -r f; do
        name=$(echo "${f#"$ASTERISK/$lang/"}" | tr '/' '_')
        ffmpeg -nostdin -hide_banner -loglevel error -f g722 -i "$f" -ar 16000 -ac 1 "$all/${name%.g722}.wav"
      done
      "$PYTHON" - "$all" "$clean" <<'PY'
import shutil, sys
from pathlib import Path
import numpy as np
import soundfile as sf
root, out = Path(sys.argv[1]), Path(sys.argv[2])
files = [p for p in sorted(root.glob("*.wav")) if 2.0 <= sf.info(p).duration <= 8.0]
for p in sorted(np.random.default_rng(0).choice(np.array(files, dtype=object), 20, replace=False)):
    shutil.copy(p, out / p.name)
print(f"{out}: 20 of {len(files)} prompts of 2-8 s")
PY
      "$TOOLKIT" degrade "$clean" --output "$WORK/asterisk-$lang" --levels 4 --seed 0 --no-progress
    done ;;
  test)
    for lang in "${LANGS[@]}"; do
      score "$lang" "$WORK/asterisk-$lang/manifest.csv" "$WORK/asterisk-$lang-results" "$ROUND3/cache" --extension combo \
          --extension probe --extension dynamics --control random-init --control acoustic | tee "$WORK/test_$lang.md"
    done ;;
  *) echo "round5.sh: unknown step $1 (select, choose, testset or test)" >&2; exit 2 ;;
esac
