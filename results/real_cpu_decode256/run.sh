#!/usr/bin/env bash
# Re-evaluates finished results/real_cpu runs on StrategyQA with a 256-token decoding budget (the
# sweep decoded up to 128). Checks whether level 3's deficit comes from answers cut off by the
# budget. Nothing is retrained: each run's own checkpoint, gin and communities are reused.
#
#   results/real_cpu_decode256/run.sh PYTHON [RUN ...]
#
# Run from a checkout of the commit the runs were evaluated with (67b1fa7), so the model code is
# the same; runs/real_cpu must hold the subsampled communities (results/real_cpu/README.md).
set -euo pipefail
python=$1; shift
out=$(cd "$(dirname "$0")" && pwd)
sweep=$(cd "$out/../real_cpu" && pwd)
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(strategyqa.L3.cot_label.s0 strategyqa.L3.cot_label.s1
  strategyqa.L1.cot_label.s0 strategyqa.L1.cot_label.s1
  csqa_strategyqa_svamp.L3.cot_label.s0 csqa_strategyqa_svamp.L3.cot_label.s1
  csqa_strategyqa_svamp.L1.cot_label.s0 csqa_strategyqa_svamp.L1.cot_label.s1)
for run in "${runs[@]}"; do
  if [ -f "$out/$run/eval/metrics.json" ]; then echo "$run: done, skipped"; continue; fi
  level=$(echo "$run" | sed -E 's/.*\.L([0-9]+)\..*/\1/')
  # The run's own binding "COMMUNITIES = [...]" becomes --gin.COMMUNITIES=[...].
  communities=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['gin_bindings'][0].split(' = ', 1)[1])" "$sweep/$run/run.json")
  echo "$run: evaluating cdc.strategyqa.L$level.cot_label, targets up to 256 tokens"
  "$python" -m cdc_jax.evaluate --gin_file=gin/experiments/smollm2_lora_coalition_cpu.gin \
    --gin.MIXTURE_OR_TASK_NAME="'cdc.strategyqa.L$level.cot_label'" \
    --gin.CHECKPOINT="'$sweep/$run/model'" --gin.EVAL_OUTPUT_DIR="'$out/$run/eval'" \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 96, 'targets': 256}" --gin.COMMUNITIES="$communities" \
    > "$out/$run.log" 2>&1
  tail -n 3 "$out/$run.log"
done
