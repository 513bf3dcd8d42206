#!/usr/bin/env bash
# Runs a sweep's runs one after another on a Cloud TPU VM slice, each on all its workers.
#
#   launch/tpu_vm_sweep.sh --tpu=NAME --zone=ZONE [options] SWEEP_DIR [-- GCLOUD_SSH_ARGS...]
#
# See usage() below and launch/README.md. Sourcing this file defines functions and runs nothing.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm_sweep.sh --tpu=NAME --zone=ZONE [--project=ID] [--repo_dir=DIR]
                              [--python=PY] [--log_dir=DIR] [--print] SWEEP_DIR [-- GCLOUD_ARGS...]

Runs each line of SWEEP_DIR/commands.txt (written by `python -m cdc_jax.sweep ... --dry_run`:
one `python -m cdc_jax.coalitions.experiment --run_dir=RUN` per unfinished run) as one job on
every worker of the TPU VM slice NAME, one run after another:

  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command='cd REPO_DIR &&
    PYTHONPATH=REPO_DIR PY -m cdc_jax.coalitions.experiment --run_dir=RUN --multihost_auto'

--multihost_auto makes each worker's process join one JAX system (jax.distributed finds the
slice's workers itself). Every worker needs the repository and its environment at REPO_DIR,
and SWEEP_DIR, DATA_ROOT, HF_CHECKPOINT and SPM_MODEL at the same paths (a Filestore/NFS or
gcsfuse mount), since all workers read the run's config and write its checkpoints. A failed
run is reported and the next one starts; the exit status is 1 if any failed. Re-run the
sweep's --dry_run to list only unfinished runs before launching again.

Options:
  --tpu=NAME       TPU VM name (required)
  --zone=ZONE      its zone (required)
  --project=ID     GCP project (default: gcloud's configured one)
  --repo_dir=DIR   the repository on the workers (default: this checkout's absolute path)
  --python=PY      interpreter on the workers (default: the one in commands.txt)
  --log_dir=DIR    where each run's combined output is kept (default: SWEEP_DIR/tpu_logs)
  --print          print the gcloud commands instead of running them
  -h, --help       this text
Arguments after -- go to `gcloud compute tpus tpu-vm ssh` (e.g. --tunnel-through-iap).
EOF
}

die() {
  echo "tpu_vm_sweep.sh: $*" >&2
  exit 2
}

# remote_command LINE: the shell command a worker runs for one line of commands.txt.
remote_command() {
  local line="$1" words=()
  # commands.txt holds shell words (cdc_jax.sweep writes them with shlex.join).
  eval "words=($line)"
  ((${#words[@]} > 0)) || return 1
  [[ -z "$python" ]] || words[0]="$python"
  local quoted
  quoted="$(printf '%q ' "${words[@]}" --multihost_auto)"
  printf 'cd %q && PYTHONPATH=%q %s' "$repo_dir" "$repo_dir" "${quoted% }"
}

# run_name LINE: the run directory's name, for the log file.
run_name() {
  local word words=()
  eval "words=($1)"
  for word in "${words[@]}"; do
    if [[ "$word" == --run_dir=* ]]; then
      basename "${word#--run_dir=}"
      return 0
    fi
  done
  echo "run"
}

main() {
  local tpu="" zone="" project="" log_dir="" print_only=0 sweep=""
  local gcloud_args=()
  python=""
  repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  while (($#)); do
    case "$1" in
      -h | --help) usage; return 0 ;;
      --tpu=*) tpu="${1#*=}" ;;
      --zone=*) zone="${1#*=}" ;;
      --project=*) project="${1#*=}" ;;
      --repo_dir=*) repo_dir="${1#*=}" ;;
      --python=*) python="${1#*=}" ;;
      --log_dir=*) log_dir="${1#*=}" ;;
      --print) print_only=1 ;;
      --) shift; gcloud_args=("$@"); break ;;
      -*) usage >&2; die "unknown option $1" ;;
      *) [[ -z "$sweep" ]] || die "one SWEEP_DIR expected, got '$sweep' and '$1'"
         sweep="$1" ;;
    esac
    shift
  done
  [[ -n "$sweep" ]] || { usage >&2; die "SWEEP_DIR is required"; }
  [[ -n "$tpu" && -n "$zone" ]] || { usage >&2; die "--tpu and --zone are required"; }
  local commands="$sweep/commands.txt"
  [[ -f "$commands" ]] || die "no $commands: run python -m cdc_jax.sweep ... --dry_run first"
  log_dir="${log_dir:-$sweep/tpu_logs}"
  local ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all)
  [[ -z "$project" ]] || ssh+=(--project="$project")

  local lines=() line
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "${line// /}" ]] || lines+=("$line")
  done <"$commands"
  ((${#lines[@]} > 0)) || { echo "nothing to run: $commands is empty"; return 0; }
  ((print_only)) || mkdir -p "$log_dir"

  local n=0 failed=() cmd name
  for line in "${lines[@]}"; do
    n=$((n + 1))
    cmd="$(remote_command "$line")" || die "cannot read line $n of $commands: $line"
    name="$(run_name "$line")"
    if ((print_only)); then
      printf '%q ' "${ssh[@]}" ${gcloud_args[@]+"${gcloud_args[@]}"} --command="$cmd"
      echo
      continue
    fi
    echo "[$n/${#lines[@]}] $name on $tpu ($(date '+%F %T'))"
    # ${a[@]+...}: an empty array under `set -u` fails on bash < 4.4.
    if ! "${ssh[@]}" ${gcloud_args[@]+"${gcloud_args[@]}"} --command="$cmd" 2>&1 \
        | tee -a "$log_dir/$name.log"; then
      echo "[$n/${#lines[@]}] $name FAILED; see $log_dir/$name.log" >&2
      failed+=("$name")
    fi
  done
  if ((${#failed[@]})); then
    echo "${#failed[@]} of ${#lines[@]} runs failed: ${failed[*]}" >&2
    return 1
  fi
  ((print_only)) || echo "all ${#lines[@]} runs finished"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
