#!/usr/bin/env bash
# The seed papers' claim sweeps (issue 18) with the SmolLM2 LoRA student on a 2-core CPU.
#
#   launch/claims_cpu.sh [--python=PY] [--claims=LIST] [--community=NAME] [--level=N]
#       [--seeds=0,1] [--budget_tokens=N] [--dry_run] DATA_ROOT OUT_ROOT
#
# See usage() below. Every sweep skips its finished runs: re-run after an interruption.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/claims_cpu.sh [options] DATA_ROOT OUT_ROOT

Runs the claims, one after another, with gin/experiments/smollm2_lora_coalition_cpu.gin as
every run's configuration (SmolLM2-135M-Instruct + LoRA, 48 steps, 200 test questions):

  formats      OUT_ROOT/claim_formats: label_only, cot_label, label_cot, permuted_cot
               (gin/sweeps/claim_formats.gin)
  key_tokens   OUT_ROOT/claim_formats: key_tokens at k = 4, 8, 16 (gin/sweeps/claim_key_tokens.gin;
               its full-rationale reference is formats' label_cot in the same directory)
  privacy      OUT_ROOT/claim_privacy: questions perturbed at eps 20, 40, 60, 100 and unperturbed
               (gin/sweeps/claim_privacy.gin)
  allocation   OUT_ROOT/claim_allocation: learnability_gap vs random at an equal token budget
               (gin/sweeps/claim_allocation_smollm2.gin): the pretrained student scores the
               community's training traces (about 10 minutes for CSQA's 400, also with
               --dry_run), then 3 selections (the policy's, 2 random) train per seed

and writes each directory's report.md. DATA_ROOT holds prepared communities (for example
runs/real_cpu, made as results/real_cpu/README.md says). 30 runs with two seeds (8, 6, 10, 6).
A level-3 CSQA run took 457 s on an idle 2-core Xeon (48 training steps at 0.23 steps/s, then
200 questions decoded at 1.19 a second), so budget about 4 hours in all, more on a busy machine.

Options:
  --claims=LIST     comma-separated claims to run, of formats, key_tokens, privacy, allocation
                    (default: all four)
  --community=NAME  the community the claims are tested on (default: csqa, the one whose
                    fine-tuned student is above chance at level 1; a student at chance cannot
                    show a format's effect)
  --level=N         rationale level (default: 3, CSQA's most detailed: about 30 words, so
                    that k = 4, 8, 16 key tokens are fewer than the full rationale)
  --seeds=LIST      comma-separated seeds (default: 0,1)
  --budget_tokens=N allocation: training tokens the policy keeps (default: the gin file's 22800,
                    half of CSQA's 400 traces at level 3; set it for another community or level)
  --dry_run         prepare the run directories and commands.txt; train nothing (allocation
                    still scores and selects)
  --python=PY       Python with cdc_jax's requirements (default: $PYTHON or python3)
  -h, --help        this text
EOF
}

die() {
  echo "claims_cpu.sh: $*" >&2
  exit 2
}

# wants CLAIM: whether --claims (main's $claims) names CLAIM.
wants() {
  [[ ",$claims," == *",$1,"* ]]
}

main() {
  local python="${PYTHON:-python3}" claims=formats,key_tokens,privacy,allocation community=csqa
  local level=3 seeds=0,1 budget=() dry=() positional=()
  local arg claim
  for arg in "$@"; do
    case "$arg" in
      --python=*) python="${arg#*=}" ;;
      --claims=*) claims="${arg#*=}" ;;
      --community=*) community="${arg#*=}" ;;
      --level=*) level="${arg#*=}" ;;
      --seeds=*) seeds="${arg#*=}" ;;
      --budget_tokens=*) budget=(--gin.BUDGET_TOKENS="${arg#*=}") ;;
      --dry_run) dry=(--dry_run) ;;
      -h|--help) usage; return 0 ;;
      -*) die "unknown option $arg" ;;
      *) positional+=("$arg") ;;
    esac
  done
  [[ ${#positional[@]} -eq 2 ]] || { usage >&2; die "DATA_ROOT and OUT_ROOT are required"; }
  local data="${positional[0]}" out="${positional[1]}"
  [[ -f "$data/$community/community.json" ]] || die "no $data/$community/community.json"
  [[ "$level" =~ ^[1-6]$ ]] || die "--level must be 1..6, got $level"
  [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--seeds must be comma-separated integers, got $seeds"
  [[ ${#budget[@]} -eq 0 || "${budget[0]#*=}" =~ ^[1-9][0-9]*$ ]] \
    || die "--budget_tokens must be a positive integer, got ${budget[0]#*=}"
  local one='(formats|key_tokens|privacy|allocation)'
  [[ "$claims" =~ ^$one(,$one)*$ ]] \
    || die "--claims must be a comma-separated list of $one, got '$claims'"

  local common=(
    --gin.DATA_ROOT="'$data'"
    --gin.RUN_GIN_FILES="['gin/experiments/smollm2_lora_coalition_cpu.gin']"
    --gin.COMMUNITIES_OF_SWEEP="['$community']"
    --gin.LEVELS="[$level]"
    --gin.SEEDS="[$seeds]"
  )
  local reports=()
  if wants formats; then
    echo "== formats: $out/claim_formats"
    "$python" -m cdc_jax.sweep --gin_file=gin/sweeps/claim_formats.gin \
      --gin.SWEEP_DIR="'$out/claim_formats'" "${common[@]}" "${dry[@]}"
  fi
  if wants key_tokens; then
    echo "== key tokens: $out/claim_formats"
    "$python" -m cdc_jax.contribution.variants --sweep=key_tokens \
      --gin_file=gin/sweeps/claim_key_tokens.gin --gin.SWEEP_DIR="'$out/claim_formats'" \
      "${common[@]}" "${dry[@]}"
  fi
  if wants formats || wants key_tokens; then reports+=("$out/claim_formats"); fi
  if wants privacy; then
    echo "== privacy: $out/claim_privacy"
    "$python" -m cdc_jax.contribution.variants --gin_file=gin/sweeps/claim_privacy.gin \
      --gin.SWEEP_DIR="'$out/claim_privacy'" "${common[@]}" "${dry[@]}"
    reports+=("$out/claim_privacy")
  fi
  if wants allocation; then
    echo "== allocation: $out/claim_allocation"
    "$python" -m cdc_jax.contribution.allocation_sweep \
      --gin_file=gin/sweeps/claim_allocation_smollm2.gin \
      --gin.SWEEP_DIR="'$out/claim_allocation'" --gin.DATA_ROOT="'$data'" \
      --gin.COMMUNITIES_OF_SWEEP="['$community']" --gin.LEVEL="$level" --gin.SEEDS="[$seeds]" \
      "${budget[@]}" "${dry[@]}"
    reports+=("$out/claim_allocation")
  fi
  if [[ ${#dry[@]} -eq 0 ]]; then
    for claim in "${reports[@]}"; do
      "$python" -m cdc_jax.report "$claim"
    done
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
