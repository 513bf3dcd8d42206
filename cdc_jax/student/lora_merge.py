"""Folds a LoRA student's adapters into its base weights: a full checkpoint.

The output is a cdc checkpoint of every parameter (``W + alpha/rank * B A``,
no adapters) that the same model without LoRA (``gin/models/smollm2_135m.gin``)
evaluates, serves as ``INIT_FROM`` or fine-tunes further. It keeps the base
weights' fingerprint: it is still only valid for that base. The command line
is ``python -m cdc_jax.merge_lora``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cdc_jax.models import decoder_only
from cdc_jax.student import checkpoints


def merge_lora(*, model: decoder_only.DecoderOnlyModel, checkpoint: str,
               output_dir: str) -> dict[str, Any]:
  """Writes the merged checkpoint to ``output_dir``; returns a summary (also printed)."""
  if model.lora is None or model.pretrained.frozen is None:
    raise ValueError("merge_lora needs a LoRA model over pretrained weights "
                     "(e.g. gin/models/smollm2_135m_lora.gin)")
  if checkpoints.checkpoint_dir(output_dir).exists():
    raise FileExistsError(f"{output_dir} already holds checkpoints; choose a new OUTPUT_DIR")
  adapters, step = checkpoints.restore_params(checkpoint)
  meta = checkpoints.restore_meta(checkpoint)
  checkpoints.check_base_weights(meta, model.base_fingerprint(), checkpoint)
  expected = jax.tree.map(lambda x: tuple(x.shape), jax.eval_shape(
      model.init_params, jax.random.key(0)))
  if jax.tree.map(lambda x: tuple(x.shape), adapters) != expected:
    raise ValueError(f"{checkpoint}: its adapters do not fit this model's LoRA config "
                     f"({model.lora})")
  full = decoder_only.merge_trees(adapters, model.pretrained.frozen)
  merged = decoder_only.fold_adapters(full, model.lora)
  saver = checkpoints.Checkpointer(output_dir, keep=1)
  saver.save(step, {"step": np.int32(step), "params": merged},
             {**meta, "merged_from": str(Path(checkpoint).absolute()),
              "lora": str(model.lora), "consumed_batches": meta.get("consumed_batches", 0)})
  saver.close()
  summary = {"checkpoint": str(checkpoint), "step": step, "output_dir": str(output_dir),
             "adapters": len(jax.tree.leaves(adapters)) // 2,
             "parameters": int(sum(np.size(x) for x in jax.tree.leaves(merged)))}
  print(json.dumps(summary, sort_keys=True), flush=True)
  return summary

