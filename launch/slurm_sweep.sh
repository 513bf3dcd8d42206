#!/usr/bin/env bash
# Submits a sweep's runs as one Slurm array: array task i runs line i+1 of commands.txt.
#
#   launch/slurm_sweep.sh [options] SWEEP_DIR [-- SBATCH_ARGS...]
#
# See usage() below and launch/README.md. Sourcing this file defines functions and runs nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/slurm_sweep.sh [--partition=P] [--account=A] [--qos=Q] [--time=D-HH:MM:SS]
                             [--nodes=N] [--gpus_per_node=G] [--cpus_per_task=C] [--mem=M]
                             [--max_parallel=K] [--job_name=NAME] [--repo_dir=DIR] [--print]
                             SWEEP_DIR [-- SBATCH_ARGS...]

Submits SWEEP_DIR/commands.txt (written by `python -m cdc_jax.sweep ... --dry_run`: one
`python -m cdc_jax.coalitions.experiment --run_dir=RUN` per unfinished run) as one Slurm job
array with one task per line. The lines are snapshotted to SWEEP_DIR/slurm/commands-<time>.txt
and the job script written to SWEEP_DIR/slurm/array-<time>.sbatch, so a later dry run cannot
change what a queued task runs; task output goes to SWEEP_DIR/slurm/<job>_<task>.out.

With --nodes=N > 1 each task runs its command under srun, one process per node, with
--multihost_auto (jax.distributed finds the other nodes from Slurm's environment); with one
node a single process drives all the node's GPUs. SWEEP_DIR, the repository, DATA_ROOT,
HF_CHECKPOINT and SPM_MODEL must be on storage the compute nodes see at the same paths.

Options (passed to sbatch when given):
  --partition=P --account=A --qos=Q --time=T --mem=M --cpus_per_task=C --gpus_per_node=G
  --nodes=N          nodes per run (default 1)
  --max_parallel=K   at most K array tasks at once (--array=0-(n-1)%K)
  --job_name=NAME    default: cdc-<sweep directory name>
  --repo_dir=DIR     the repository on the nodes (default: this checkout's absolute path)
  --print            write the files and print the sbatch command instead of submitting
  -h, --help         this text
Arguments after -- go to sbatch as given.
EOF
}

die() {
  echo "slurm_sweep.sh: $*" >&2
  exit 2
}

# write_job_script PATH COMMANDS REPO NODES: the array task's script.
write_job_script() {
  local path="$1" commands="$2" repo="$3" nodes="$4"
  {
    echo '#!/usr/bin/env bash'
    echo '# Written by launch/slurm_sweep.sh: array task i runs line i+1 of the commands file.'
    echo 'set -euo pipefail'
    printf 'commands=%q\nrepo=%q\nnodes=%q\n' "$commands" "$repo" "$nodes"
    cat <<'EOF'
line_number=$((SLURM_ARRAY_TASK_ID + 1))
line="$(sed -n "${line_number}p" "$commands")"
[[ -n "$line" ]] || { echo "no line $line_number in $commands" >&2; exit 1; }
# The line holds shell words (cdc_jax.sweep writes them with shlex.join).
eval "cmd=($line)"
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
echo "[$(date '+%F %T')] task $SLURM_ARRAY_TASK_ID on $(hostname): $line"
if ((nodes > 1)); then
  # One process per node; jax.distributed reads the job's layout from Slurm's environment.
  srun --nodes="$nodes" --ntasks-per-node=1 "${cmd[@]}" --multihost_auto
else
  "${cmd[@]}"
fi
EOF
  } >"$path"
  chmod +x "$path"
}

main() {
  local sweep="" nodes=1 max_parallel="" job_name="" print_only=0 repo_dir
  local sbatch_opts=() extra=()
  repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  while (($#)); do
    case "$1" in
      -h | --help) usage; return 0 ;;
      --partition=* | --account=* | --qos=* | --time=* | --mem=*) sbatch_opts+=("$1") ;;
      --cpus_per_task=*) sbatch_opts+=("--cpus-per-task=${1#*=}") ;;
      --gpus_per_node=*) sbatch_opts+=("--gpus-per-node=${1#*=}") ;;
      --nodes=*) nodes="${1#*=}" ;;
      --max_parallel=*) max_parallel="${1#*=}" ;;
      --job_name=*) job_name="${1#*=}" ;;
      --repo_dir=*) repo_dir="${1#*=}" ;;
      --print) print_only=1 ;;
      --) shift; extra=("$@"); break ;;
      -*) usage >&2; die "unknown option $1" ;;
      *) [[ -z "$sweep" ]] || die "one SWEEP_DIR expected, got '$sweep' and '$1'"
         sweep="$1" ;;
    esac
    shift
  done
  [[ -n "$sweep" ]] || { usage >&2; die "SWEEP_DIR is required"; }
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, not '$nodes'"
  [[ -z "$max_parallel" || "$max_parallel" =~ ^[1-9][0-9]*$ ]] ||
    die "--max_parallel must be a positive integer, not '$max_parallel'"
  [[ -f "$sweep/commands.txt" ]] || die "no $sweep/commands.txt: run python -m cdc_jax.sweep ... --dry_run first"
  sweep="$(cd "$sweep" && pwd)"

  local stamp slurm_dir commands script
  stamp="$(date '+%Y%m%d-%H%M%S')-$$"
  slurm_dir="$sweep/slurm"
  commands="$slurm_dir/commands-$stamp.txt"
  script="$slurm_dir/array-$stamp.sbatch"
  mkdir -p "$slurm_dir"
  # Blank lines would shift task i off line i+1.
  grep -v '^[[:space:]]*$' "$sweep/commands.txt" >"$commands" || true
  local n
  n="$(wc -l <"$commands")"
  n="${n//[[:space:]]/}"
  if ((n == 0)); then
    rm -f -- "$commands"
    echo "nothing to submit: $sweep/commands.txt lists no runs"
    return 0
  fi
  write_job_script "$script" "$commands" "$repo_dir" "$nodes"

  local array="0-$((n - 1))"
  [[ -z "$max_parallel" ]] || array+="%$max_parallel"
  local submit=(sbatch "--array=$array" "--job-name=${job_name:-cdc-$(basename "$sweep")}"
                "--output=$slurm_dir/%A_%a.out" "--nodes=$nodes" --ntasks-per-node=1)
  submit+=(${sbatch_opts[@]+"${sbatch_opts[@]}"} ${extra[@]+"${extra[@]}"} "$script")
  if ((print_only)); then
    printf '%q ' "${submit[@]}"
    echo
    return 0
  fi
  echo "submitting $n runs of $sweep as one array ($script)"
  "${submit[@]}"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
