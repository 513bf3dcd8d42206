#!/usr/bin/env bash
# The seed papers' claim sweeps (issue 18) with the SmolLM2 LoRA student on a 2-core CPU.
#
#   launch/claims_cpu.sh [--python=PY] [--community=NAME] [--level=N] [--seeds=0,1] [--dry_run]
#       DATA_ROOT OUT_ROOT
#
# See usage() below. Every sweep skips its finished runs: re-run after an interruption.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/claims_cpu.sh [options] DATA_ROOT OUT_ROOT

Runs, one after another, with gin/experiments/smollm2_lora_coalition_cpu.gin as every run's
configuration (SmolLM2-135M-Instruct + LoRA, 48 steps, 200 test questions):

  OUT_ROOT/claim_formats   cot_label, label_cot, permuted_cot (gin/sweeps/claim_formats.gin),
                           then key_tokens at k = 4, 8, 16 (gin/sweeps/claim_key_tokens.gin;
                           its full-rationale reference is label_cot in the same directory)
  OUT_ROOT/claim_privacy   questions perturbed at eps 20, 40, 60, 100 and unperturbed
                           (gin/sweeps/claim_privacy.gin)

and writes each directory's report.md. DATA_ROOT holds prepared communities (for example
runs/real_cpu, made as results/real_cpu/README.md says). 22 runs with two seeds. A level-1
CSQA run takes about 7 minutes on a 2-core Xeon (4 of training, 2.5 of decoding); level 3's
targets are about twice as long, so budget 3 to 4 hours in all (not yet measured).

Options:
  --community=NAME  the community the claims are tested on (default: csqa, the one whose
                    fine-tuned student is above chance at level 1; a student at chance cannot
                    show a format's effect)
  --level=N         rationale level (default: 3, CSQA's most detailed: about 30 words, so
                    that k = 4, 8, 16 key tokens are fewer than the full rationale)
  --seeds=LIST      comma-separated seeds (default: 0,1)
  --dry_run         prepare the run directories and commands.txt; train nothing
  --python=PY       Python with cdc_jax's requirements (default: $PYTHON or python3)
  -h, --help        this text
EOF
}

die() {
  echo "claims_cpu.sh: $*" >&2
  exit 2
}

main() {
  local python="${PYTHON:-python3}" community=csqa level=3 seeds=0,1 dry=() positional=()
  local arg
  for arg in "$@"; do
    case "$arg" in
      --python=*) python="${arg#*=}" ;;
      --community=*) community="${arg#*=}" ;;
      --level=*) level="${arg#*=}" ;;
      --seeds=*) seeds="${arg#*=}" ;;
      --dry_run) dry=(--dry_run) ;;
      -h|--help) usage; return 0 ;;
      -*) die "unknown option $arg (see --help)" ;;
      *) positional+=("$arg") ;;
    esac
  done
  [[ ${#positional[@]} -eq 2 ]] || { usage >&2; die "expected DATA_ROOT and OUT_ROOT"; }
  local data="${positional[0]}" out="${positional[1]}"
  [[ -f "$data/$community/community.json" ]] || die "no $data/$community/community.json"
  [[ "$level" =~ ^[1-6]$ ]] || die "--level must be 1..6, got $level"
  [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--seeds must be comma-separated integers, got $seeds"

  local common=(
    --gin.DATA_ROOT="'$data'"
    --gin.RUN_GIN_FILES="['gin/experiments/smollm2_lora_coalition_cpu.gin']"
    --gin.COMMUNITIES_OF_SWEEP="['$community']"
    --gin.LEVELS="[$level]"
    --gin.SEEDS="[$seeds]"
  )
  echo "== formats: $out/claim_formats"
  "$python" -m cdc_jax.sweep --gin_file=gin/sweeps/claim_formats.gin \
    --gin.SWEEP_DIR="'$out/claim_formats'" "${common[@]}" "${dry[@]}"
  echo "== key tokens: $out/claim_formats"
  "$python" -m cdc_jax.contribution.variants --sweep=key_tokens \
    --gin_file=gin/sweeps/claim_key_tokens.gin --gin.SWEEP_DIR="'$out/claim_formats'" \
    "${common[@]}" "${dry[@]}"
  echo "== privacy: $out/claim_privacy"
  "$python" -m cdc_jax.contribution.variants --gin_file=gin/sweeps/claim_privacy.gin \
    --gin.SWEEP_DIR="'$out/claim_privacy'" "${common[@]}" "${dry[@]}"
  if [[ ${#dry[@]} -eq 0 ]]; then
    "$python" -m cdc_jax.report "$out/claim_formats"
    "$python" -m cdc_jax.report "$out/claim_privacy"
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
