#!/usr/bin/env bash
# Imports the paper's four real communities (LLaMA-3-70B leveled CoT) into DATA_ROOT.
#
#   launch/prepare_real_communities.sh [--source=DIR] [--keep=all|correct] [--python=PY] DATA_ROOT
#
# See usage() below and launch/README.md. Sourcing this file defines functions and runs nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/prepare_real_communities.sh [--source=DIR] [--keep=all|correct] [--python=PY] DATA_ROOT

Imports the four communities of gin/experiments/cdc_t5_base.gin into DATA_ROOT:

  DATA_ROOT/strategyqa  EIT stqa_llama_level1..6; test: EIT strategyQA_test.json (290)
  DATA_ROOT/csqa        EIT csqa_llama_level1..3; test: EIT csqa_test.json (1,221)
  DATA_ROOT/svamp       EIT SVAMP_llama_level1..4; test: the 300 SVAMP questions of
                        distilling-step-by-step (dss/svamp train+test) not in EIT's 700
  DATA_ROOT/gsm8k       EIT gsm8k_llama_level1..2; test: official GSM8K test.jsonl (1,319)

EIT has no GSM8K or SVAMP test file, so those test splits come from the official
releases (imported under DATA_ROOT/held_out/ and attached with cdc_jax.data.attach_split,
leaving out any question that is also a training question). Import reports (records
per split, teacher accuracy per level, skipped and merged questions) go to
DATA_ROOT/reports/. Re-running rebuilds everything.

Options:
  --source=DIR    the published data: eit_cot/, gsm8k/, dss/svamp/ (default: ../shared/data
                  next to this repository)
  --keep=all      keep every teacher rationale (default); 'correct' keeps only rationales whose
                  answer is the gold one (training splits; held-out questions are always kept)
  --python=PY     Python with cdc_jax's requirements (default: $PYTHON or python3)
  -h, --help      this text
EOF
}

die() {
  echo "prepare_real_communities.sh: $*" >&2
  exit 2
}

# run_import NAME OUT ARGS...: one importer in the background, its report in $reports/NAME.txt.
run_import() {
  local name="$1" out="$2"
  shift 2
  "$python" -m cdc_jax.data.import_traces --community="$name" --out="$out" "$@" \
    >"$reports/$name.txt" 2>&1 &
  pids+=("$!")
  jobs_names+=("$name")
}

main() {
  local source="" keep="all" data_root=""
  python="${PYTHON:-python3}"
  while (($#)); do
    case "$1" in
      -h | --help) usage; return 0 ;;
      --source=*) source="${1#*=}" ;;
      --keep=*) keep="${1#*=}" ;;
      --python=*) python="${1#*=}" ;;
      -*) usage >&2; die "unknown option $1" ;;
      *) [[ -z "$data_root" ]] || die "one DATA_ROOT expected, got '$data_root' and '$1'"
         data_root="$1" ;;
    esac
    shift
  done
  [[ -n "$data_root" ]] || { usage >&2; die "DATA_ROOT is required"; }
  [[ "$keep" == all || "$keep" == correct ]] || die "--keep must be 'all' or 'correct', not '$keep'"
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  source="${source:-$repo/../shared/data}"
  local needed
  for needed in eit_cot/stqa_llama_level1_ranked.json gsm8k/test.jsonl dss/svamp/svamp_train.json; do
    [[ -f "$source/$needed" ]] || die "no $source/$needed (is --source the published data folder?)"
  done
  source="$(cd "$source" && pwd)"
  mkdir -p "$data_root"
  data_root="$(cd "$data_root" && pwd)"
  reports="$data_root/reports"
  local staging="$data_root/staging" held_out="$data_root/held_out"
  mkdir -p "$reports" "$held_out"
  rm -rf -- "$staging"
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
  export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0

  # The imports are independent: run them side by side.
  pids=()
  jobs_names=()
  local eit=(--format=leveled_cot --source="$source/eit_cot" --teacher=llama --keep="$keep")
  run_import strategyqa "$data_root/strategyqa" "${eit[@]}" --dataset=strategyqa
  run_import csqa "$data_root/csqa" "${eit[@]}" --dataset=csqa
  run_import svamp "$staging/svamp" "${eit[@]}" --dataset=svamp
  run_import gsm8k "$staging/gsm8k" "${eit[@]}" --dataset=gsm8k
  run_import gsm8k_official "$held_out/gsm8k_official" --format=gsm8k --source="$source/gsm8k"
  run_import svamp_dss "$held_out/svamp_dss" --format=dss --source="$source/dss/svamp"
  local i failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "import of ${jobs_names[$i]} failed; its output ($reports/${jobs_names[$i]}.txt):" >&2
      cat "$reports/${jobs_names[$i]}.txt" >&2
      failed=1
    fi
  done
  ((failed == 0)) || die "an import failed; nothing attached"

  "$python" -m cdc_jax.data.attach_split --target="$staging/gsm8k" \
    --source="$held_out/gsm8k_official" --source_splits=test --out="$data_root/gsm8k" \
    >"$reports/gsm8k_test.txt"
  "$python" -m cdc_jax.data.attach_split --target="$staging/svamp" \
    --source="$held_out/svamp_dss" --source_splits=train,test --out="$data_root/svamp" \
    >"$reports/svamp_test.txt"
  rm -rf -- "$staging"

  local name
  for name in strategyqa csqa svamp gsm8k; do
    head -n 1 "$reports/$name.txt"
  done
  cat "$reports/gsm8k_test.txt" "$reports/svamp_test.txt"
  echo "communities in $data_root: strategyqa csqa svamp gsm8k (reports in $reports)"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
