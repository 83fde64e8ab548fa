#!/usr/bin/env bash
# The steps every recipe runs; recipes/<domain>/run.sh sets the domain and calls this script.
# Read it top to bottom: each step is one toolkit command, and you can run them by hand.
#
#   recipes/<domain>/run.sh --audio DIR [--audio DIR...] --eval SPEC [--eval SPEC...] \
#       --init wav2vec_large.pt [--work DIR] [--local] [-- SUBMIT_OPTIONS]
#   recipes/<domain>/run.sh --smoke [--local]
#
#   --audio DIR    your target-domain audio (any mix of wav/flac/ogg/mp3, any rate/channels)
#   --eval SPEC    a MOS set for `toolkit evaluate --dataset` (the recipe's README gives the spec);
#                  a held-out degradation set is `csv:DIR/manifest.csv` (made by `toolkit degrade`)
#   --init FILE    fairseq's wav2vec_large.pt (or a toolkit checkpoint, e.g. the embedded default
#                  toolkit/assets/default/model.pt) to continue pretraining from; `scratch` trains
#                  the same steps from random weights (the comparison run)
#   --preset NAME  `large` (default: toolkit/configs/pretrain/wav2vec_large.yaml) or `small`
#                  (toolkit/configs/pretrain/small.yaml, the embedded default's architecture)
#   --steps N      optimizer steps (and the schedule's length); default: the recipe's pretrain.yaml
#   --every N      a checkpoint (a point on the adaptation curve) every N steps
#   --exclude PATH more audio that pretraining must not contain (held-out speakers; leakage guard)
#   --offdomain SPEC  a MOS set scored only at step 0 and at the last checkpoint (forgetting)
#   --pretrain-arg ARG  one more `toolkit pretrain` override (--pretrain-arg=--trainer.precision=bf16-mixed)
#   --eval-arg ARG      one more `toolkit evaluate` option (--eval-arg=--draws=2)
#   --work DIR     where manifest, shards, runs and results go (default runs/<domain>)
#   --local        run pretraining and evaluation here, without SLURM; rerun the same command to
#                  resume an interrupted run from its newest checkpoint
#   --smoke        the whole recipe in minutes on ../shared/data/speech/<domain> with the small
#                  preset, a random stand-in for wav2vec_large.pt, and a 24-clip stand-in MOS set
#   -- OPTIONS     passed to `toolkit submit chain`: --partition, --account, --time, --nodes,
#                  --gpus-per-node, --eval-gpus, --eval-time, --every MINUTES, ... (see --help)
set -euo pipefail

: "${DOMAIN:?run this through recipes/<domain>/run.sh}"
: "${SMOKE_AUDIO:?}" "${SMOKE_EVAL:?}"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PYTHON=${PYTHON:-python3}
TOOLKIT=("$PYTHON" -m toolkit)

AUDIO=() EVAL=() INIT="" WORK="runs/$DOMAIN" LOCAL=0 SMOKE=0 SUBMIT=()
PRESET=large STEPS="" EVERY="" EXCLUDE=() OFFDOMAIN=() EXTRA_PRETRAIN=() EXTRA_EVAL=()
while (($#)); do
    case $1 in
    --audio) AUDIO+=("$2"); shift 2 ;;
    --eval) EVAL+=("$2"); shift 2 ;;
    --init) INIT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --preset) PRESET=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --every) EVERY=$2; shift 2 ;;
    --exclude) EXCLUDE+=("$2"); shift 2 ;;
    --offdomain) OFFDOMAIN+=("$2"); shift 2 ;;
    --pretrain-arg=*) EXTRA_PRETRAIN+=("${1#--pretrain-arg=}"); shift ;;
    --eval-arg=*) EXTRA_EVAL+=("${1#--eval-arg=}"); shift ;;
    --local) LOCAL=1; shift ;;
    --smoke) SMOKE=1; shift ;;
    --) shift; SUBMIT=("$@"); break ;;
    -h | --help) sed -n '2,35p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

case $PRESET in
large) BASE=wav2vec_large.yaml ;;
small) BASE=small.yaml ;;
*) echo "run.sh: --preset is large or small, not '$PRESET'" >&2; exit 2 ;;
esac
CONFIGS=(--config "$REPO/toolkit/configs/pretrain/$BASE" --config "$HERE/$DOMAIN/pretrain.yaml")
OVERRIDES=()
EVAL_OPTIONS=()
GUARD=()
if ((SMOKE)); then
    # Smoke: real audio of the domain from ../shared, the small preset, 20 steps, 24 rated clips.
    WORK=${SMOKE_WORK:-runs/$DOMAIN-smoke}
    AUDIO=("$SMOKE_AUDIO")
    EVAL=("$SMOKE_EVAL")
    CONFIGS=(--config "$REPO/toolkit/configs/pretrain/small.yaml" --config "$HERE/$DOMAIN/pretrain.yaml")
    OVERRIDES=(--trainer.max_steps=20 --model.warmup_updates=5 --checkpoint.every_n_steps=10 --checkpoint.keep_last=5
        --trainer.accelerator=cpu --trainer.precision=32-true --trainer.log_every_n_steps=5
        --trainer.enable_progress_bar=false
        --data.num_workers=0 --data.max_sample_size=32000 --data.max_tokens=128000
        --adaptation.every_n_steps=10 --adaptation.max_clips=8 --adaptation.max_seconds=2
        --logging.wandb=disabled)
    EVAL_OPTIONS=(--limit 24 --draws 1 --bootstrap 100 --device cpu --no-progress --wandb-mode disabled)
    [[ ${#SUBMIT[@]} -gt 0 ]] || SUBMIT=(--time 0:20:00)
    echo "SMOKE MODE: small preset, random stand-in for wav2vec_large.pt, stand-in MOS set ($SMOKE_EVAL)."
    echo "            Its numbers say nothing about the method; it checks that every step runs."
else
    [[ ${#AUDIO[@]} -gt 0 ]] || { echo "run.sh: give --audio DIR (your $DOMAIN audio), or --smoke" >&2; exit 2; }
    [[ ${#EVAL[@]} -gt 0 ]] || { echo "run.sh: give --eval SPEC (see recipes/$DOMAIN/README.md)" >&2; exit 2; }
    [[ -n $INIT ]] || { echo "run.sh: give --init wav2vec_large.pt" >&2; exit 2; }
    # Leakage guard: no file whose decoded audio is in an evaluation set goes into pretraining.
    # A degradation set (csv:DIR/manifest.csv) is guarded by its folder: its clean clips.
    for spec in "${EVAL[@]}" "${OFFDOMAIN[@]}"; do
        body=${spec#*=}                   # drop an optional NAME=
        path=${body#*:}; path=${path%%:*}  # KIND:PATH[:ARGS] -> PATH
        [[ $path == *.csv ]] && path=$(dirname "$path")
        GUARD+=("$path")
    done
    GUARD+=("${EXCLUDE[@]}")
    [[ -z $STEPS ]] || OVERRIDES+=(--trainer.max_steps="$STEPS")  # also the schedule length
    [[ -z $EVERY ]] || OVERRIDES+=(--checkpoint.every_n_steps="$EVERY" --adaptation.every_n_steps="$EVERY")
    OVERRIDES+=("${EXTRA_PRETRAIN[@]}")
    EVAL_OPTIONS+=(--control random-init --control acoustic "${EXTRA_EVAL[@]}")
fi
mkdir -p "$WORK"
echo "== $DOMAIN recipe in $WORK"

# 1. Manifest: every audio file with duration, rate, channels and a content hash; unusable files
#    (unreadable, too short, silent, NaN) are counted in the report, never dropped silently.
manifest=("${TOOLKIT[@]}" manifest "${AUDIO[@]}" --domain "$DOMAIN" --output "$WORK/manifest.tsv" --resume)
if ((${#GUARD[@]})); then manifest+=(--exclude-eval-set "${GUARD[@]}"); fi
"${manifest[@]}"

# 2. Shards: lossless 16 kHz mono audio in webdataset tars with an index; long files cut into 30 s chunks.
"${TOOLKIT[@]}" shard "$WORK/manifest.tsv" --output "$WORK/shards" --max-seconds 30 --overwrite

save_random_model() {  # PATH PRESET: the preset's architecture with weights seeded by 0, as step 0
    "$PYTHON" -c 'import sys, torch
from toolkit.models.checkpoint import save_model
from toolkit.models.wav2vec import build_preset
torch.manual_seed(0)
save_model(sys.argv[1], build_preset(sys.argv[2]), step=0)' "$1" "$2"
}

# 3. The model to continue from: fairseq's wav2vec_large.pt converted to a toolkit checkpoint
#    (32,537,088 parameters). In smoke mode, a seeded random small model stands in for it.
if ((SMOKE)); then
    INIT_TOOLKIT="$WORK/init-random-small.pt"
    save_random_model "$INIT_TOOLKIT" small
elif [[ $INIT == scratch ]]; then
    INIT_TOOLKIT=""
elif [[ $("$PYTHON" -c 'import sys; from toolkit.checkpoints import checkpoint_info; print(checkpoint_info(sys.argv[1]).kind)' "$INIT") == fairseq ]]; then
    INIT_TOOLKIT="$WORK/$(basename "${INIT%.*}").toolkit.pt"
    [[ -s $INIT_TOOLKIT ]] || "${TOOLKIT[@]}" import-fairseq "$INIT" --output "$INIT_TOOLKIT"
else
    INIT_TOOLKIT=$INIT
fi

# 4. Continued pretraining on the shards, with the adaptation curve (SRCC on the first MOS set every
#    N steps) logged to W&B and to RUN/adaptation/curve.{csv,png}; then every checkpoint evaluated.
RUN="$WORK/run"
RESULTS="$WORK/results"
OVERRIDES+=(--data.train_shards "$WORK/shards" --adaptation.dataset "${EVAL[0]}")
# Step 0 of the curve: the model the run starts from (random weights of the preset for `scratch`).
STEP0="$WORK/step-0.pt"
if [[ -n $INIT_TOOLKIT ]]; then
    OVERRIDES+=(--model.init_from "$INIT_TOOLKIT")
    [[ -s $STEP0 ]] || "$PYTHON" -c 'import sys
from toolkit.models.checkpoint import load_checkpoint, save_model
model, info = load_checkpoint(sys.argv[1])
save_model(sys.argv[2], model, step=0, extra={"source": sys.argv[1], "source_step": info.get("step")})' "$INIT_TOOLKIT" "$STEP0"
else
    OVERRIDES+=(--model.preset "$PRESET")
    [[ -s $STEP0 ]] || save_random_model "$STEP0" "$PRESET"
fi
DATASETS=()
for spec in "${EVAL[@]}"; do DATASETS+=(--dataset "$spec"); done
OFF_DATASETS=()
for spec in "${OFFDOMAIN[@]}"; do OFF_DATASETS+=(--dataset "$spec"); done

if ((LOCAL)); then
    # A rerun of the same command resumes from the newest complete checkpoint (--resume auto).
    "${TOOLKIT[@]}" pretrain "${CONFIGS[@]}" "${OVERRIDES[@]}" --trainer.default_root_dir "$RUN"
    # The run's checkpoints, oldest first: the same list `toolkit submit evaluate --checkpoints "$RUN"` takes.
    mapfile -t CKPTS < <("${TOOLKIT[@]}" submit checkpoints "$RUN")
    "${TOOLKIT[@]}" evaluate "$STEP0" "${CKPTS[@]}" "${DATASETS[@]}" "${EVAL_OPTIONS[@]}" --output "$RESULTS"
    if ((${#OFF_DATASETS[@]})); then
        # Forgetting: the off-domain sets at the start and at the end of the run.
        "${TOOLKIT[@]}" evaluate "$STEP0" "${CKPTS[-1]}" "${OFF_DATASETS[@]}" "${EVAL_OPTIONS[@]}" \
            --output "$WORK/results-offdomain"
    fi
else
    # Everything is checked before anything is queued (configs, paths, checkpoints, resources).
    # Pretraining config files are passed with --config; the overrides go on the command line.
    submit=("${TOOLKIT[@]}" submit chain --run-dir "$RUN" --eval-output "$RESULTS")
    for ((i = 1; i < ${#CONFIGS[@]}; i += 2)); do submit+=(--config "${CONFIGS[i]}"); done
    for o in "${OVERRIDES[@]}"; do submit+=("--pretrain-arg=$o"); done
    submit+=("${SUBMIT[@]}" -- "${DATASETS[@]}" "${EVAL_OPTIONS[@]}")
    "${submit[@]}" | tee "$WORK/submitted.txt"
    if ((SMOKE)); then
        # Wait for the merged table (the smoke run is small enough to wait for).
        deadline=$((SECONDS + ${SMOKE_TIMEOUT:-900}))
        until [[ -s $RESULTS/results.csv ]]; do
            ((SECONDS < deadline)) || { echo "smoke: no $RESULTS/results.csv after ${SMOKE_TIMEOUT:-900}s" >&2; exit 1; }
            sleep 5
        done
    else
        echo "Submitted. Follow the logs in $RUN/slurm and $RESULTS/slurm; results land in $RESULTS/results.csv."
        exit 0
    fi
fi

# 5. The adaptation curve: SRCC of each measure against the pretraining step, from the evaluation of
#    every checkpoint (results.csv, plots/) and from training itself (adaptation/curve.csv).
# Degradation sets (csv:DIR/manifest.csv from `toolkit degrade`): SRCC per degradation type, and
# the paired difference last checkpoint - step 0 (clusters: the clean recordings).
degradation_sets() {  # SPEC...: prints NAME<TAB>MANIFEST for each `toolkit degrade` manifest among them
    local spec name body path
    for spec in "$@"; do
        name=${spec%%=*}; [[ $name == "$spec" ]] && name=""
        body=${spec#*=}; [[ $body == csv:* ]] || continue
        path=${body#csv:}; [[ -n $name ]] || name=$(basename "${path%.*}")
        head -n 1 "$path" | grep -q clean_id || continue
        printf '%s\t%s\n' "$name" "$path"
    done
}
severity_tables() {  # RESULTS_DIR SPEC...
    local out=$1 name path; shift
    while IFS=$'\t' read -r name path; do
        "$PYTHON" "$HERE/severity_table.py" "$out" "$name" "$path" | tee "$out/severity_$name.md"
    done < <(degradation_sets "$@")
}
paired_tables() {  # RESULTS_DIR SCORER_A SCORER_B SPEC...: SRCC(A) - SRCC(B) on the same clips
    local out=$1 a=$2 b=$3 name path; shift 3
    while IFS=$'\t' read -r name path; do
        echo "== $name, paired: $a - $b"
        "$PYTHON" "$HERE/paired_srcc.py" "$out/scores/$a/$name.csv" "$out/scores/$b/$name.csv" --manifest "$path" \
            --measure p_pos.mean --measure entropy.mean | tee "$out/paired_$name.txt"
    done < <(degradation_sets "$@")
}
if ((LOCAL)); then
    severity_tables "$RESULTS" "${EVAL[@]}"
    ((${#OFFDOMAIN[@]} == 0)) || severity_tables "$WORK/results-offdomain" "${OFFDOMAIN[@]}"
    last=$(basename "${CKPTS[-1]}"); paired_tables "$RESULTS" "${last%.*}" step-0 "${EVAL[@]}"
fi
echo "== results: $RESULTS/results.csv"
ls "$RESULTS"/plots 2>/dev/null | sed 's/^/   plots: /' || true
ls "$RUN"/adaptation 2>/dev/null | sed 's/^/   adaptation: /' || true
