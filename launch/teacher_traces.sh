#!/usr/bin/env bash
# Teacher CoT traces for one community, as NUM_SHARDS shard processes.
#
#   launch/teacher_traces.sh INPUT OUT NUM_SHARDS [launcher flags...]
#
# Locally (the default): starts one process per shard index in parallel on this
# machine, waits for all, then verifies the output and writes it as a community
# directory at OUT/community. Each shard logs to OUT/logs/shard-SSSSS.log.
#   launch/teacher_traces.sh /tmp/cdc_communities/strategy /tmp/traces/strategy 2 --backend=oracle
#   launch/teacher_traces.sh stqa/ /tmp/traces/stqa 4 --backend=openai --base_url=http://host:8000/v1
#
# On a cluster: run one task per shard with SHARD_INDEX set from the scheduler;
# that task runs only its shard, and whichever shard finishes last (all others
# done and verified) writes OUT/community. E.g. SLURM:
#   sbatch --array=0-15 --wrap 'SHARD_INDEX=$SLURM_ARRAY_TASK_ID launch/teacher_traces.sh IN OUT 16 --backend=jax'
# A killed or preempted task is simply re-run: the launcher resumes from its last
# committed chunk. Re-running this script after a crash resumes every shard.
#
# A large teacher shards over a (data, model) mesh of one node's GPUs, e.g. LLaMA-3-70B
# from a local HF directory on 8 GPUs, one shard index per node (not run here: CPU only):
#   SHARD_INDEX=0 launch/teacher_traces.sh IN OUT 4 --backend=jax \
#     --safetensors=/models/Meta-Llama-3-70B-Instruct --dtype=bfloat16 --mesh_shape=1,8
# Over several nodes, every node of a shard runs the same command plus
# --coordinator_address=NODE0:PORT --num_processes=N --process_id=I; process 0 writes.
#
# Environment: PYTHON (default: python), SHARD_INDEX (cluster mode).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,26p' "$0" >&2
  exit 2
fi
INPUT=$1
OUT=$2
NUM_SHARDS=$3
shift 3
PYTHON=${PYTHON:-python}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="${REPO}${PYTHONPATH:+:$PYTHONPATH}"
COMMUNITY_DIR="${OUT}/community"

run_shard() {
  "$PYTHON" -m cdc_jax.teacher.launch --input="$INPUT" --out="$OUT" \
    --num_shards="$NUM_SHARDS" --shard_index="$1" --write_community="$COMMUNITY_DIR" "${@:2}"
}

if [[ -n "${SHARD_INDEX:-}" ]]; then
  run_shard "$SHARD_INDEX" "$@"
  exit $?
fi

mkdir -p "$OUT/logs"
pids=()
for ((i = 0; i < NUM_SHARDS; i++)); do
  log=$(printf '%s/logs/shard-%05d.log' "$OUT" "$i")
  run_shard "$i" "$@" >"$log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "shard $i failed; see $(printf '%s/logs/shard-%05d.log' "$OUT" "$i")" >&2
    failed=1
  fi
done
if [[ $failed -ne 0 ]]; then
  echo "some shards failed; re-run the same command to resume them" >&2
  exit 1
fi
# Verify everything once more and (re)write the community directory; verify
# must see the same --splits as the launcher.
verify_flags=()
args=("$@")
for ((k = 0; k < ${#args[@]}; k++)); do
  case "${args[$k]}" in
    --splits=*) verify_flags+=("${args[$k]}") ;;
    --splits) verify_flags+=("--splits=${args[$((k + 1))]}") ;;
  esac
done
"$PYTHON" -m cdc_jax.teacher.verify --input="$INPUT" --out="$OUT" --num_shards="$NUM_SHARDS" \
  --write_community="$COMMUNITY_DIR" "${verify_flags[@]}"
