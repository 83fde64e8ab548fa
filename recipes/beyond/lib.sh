# Sourced by round3.sh, round4.sh and round5.sh: the model, and how every real-voice degradation set of
# issue 15 is scored (the embedded default, 2 negative draws, bf16, both CPU cores), then tabled per type.
# Needs REPO, TOOLKIT and PYTHON set by the caller.
MODEL=$REPO/toolkit/assets/default/model.pt
SETS=(fresh:fresh fillets-cs:cs fillets-nl:nl)  # round 3's real-voice sets, folder : dataset name

score() {  # score NAME MANIFEST OUT CACHE [more `toolkit evaluate` arguments]
  local name=$1 manifest=$2 out=$3 cache=$4; shift 4
  "$TOOLKIT" evaluate "$MODEL" --dataset "$name=csv:$manifest" --measures p_pos.mean,entropy.mean --draws 2 --bf16 \
      --cache "$cache" --wandb-mode disabled --jobs 2 --no-progress --output "$out" "$@"
  "$PYTHON" "$REPO/recipes/severity_table.py" "$out" "$name" "$manifest"
}
