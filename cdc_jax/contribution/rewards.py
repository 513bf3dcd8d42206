"""Rewards of a trace (higher = the model fits it better) and its training-token count.

- :func:`model_log_likelihood`: the mean per-token log-likelihood of the
  trace's training target under an encoder-decoder (the student, or a
  stronger reference model), scored as the training task renders it.
- :func:`teacher_correctness`: 1/0 from the record's ``teacher_answer``.
- :func:`vocabulary_token_counter`: tokens a trace costs to train on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cdc_jax.contribution.budgets import TokenCounter
from cdc_jax.data import records as records_lib

Reward = Callable[[Sequence[records_lib.TraceRecord]], Sequence[float]]
"""``reward(records) -> values``, higher = the model fits the trace better."""


def reward_values(reward: Reward, records: Sequence[records_lib.TraceRecord],
                  what: str) -> list[float]:
  """``reward(records)`` as floats, checked: one finite value per record (``what`` names it)."""
  values = [float(v) for v in reward(records)]
  if len(values) != len(records):
    raise ValueError(f"{what} reward returned {len(values)} values for {len(records)} records")
  bad = [r.id for r, v in zip(records, values) if not math.isfinite(v)]
  if bad:
    raise ValueError(f"{what} reward is not finite for records {bad[:5]}")
  return values


def teacher_correctness(records: Sequence[records_lib.TraceRecord]) -> list[float]:
  """The teacher's correctness as a reward: 1.0 right, 0.0 wrong (unknown is an error)."""
  unknown = [r.id for r in records if r.teacher_correct is None]
  if unknown:
    raise ValueError(f"teacher correctness is unknown (no teacher_answer) for records "
                     f"{unknown[:5]}; score the reference with a model instead")
  return [float(r.teacher_correct) for r in records]


def _render(record: records_lib.TraceRecord, *, level: int, fmt: str) -> dict[str, str]:
  """``record``'s example in the task ``cdc.<c>.L<level>.<fmt>`` (step_by_step: explain)."""
  from cdc_jax.tasks import formats

  return formats.render_example(
      fmt=fmt, part="explain" if fmt == "step_by_step" else None, question=record.question,
      answer=record.answer, rationale=record.rationales.get(level), choices=record.choices,
      example_id=record.id)


def _encode(vocabulary, text: str) -> list[int]:
  return list(vocabulary.encode(text)) if text.strip() else []


def vocabulary_token_counter(vocabulary, *, level: int = 6,
                             fmt: str = "cot_label") -> TokenCounter:
  """Training tokens per record: its rendered inputs and targets, each with EOS (untruncated)."""

  def count(records: Sequence[records_lib.TraceRecord]) -> list[int]:
    out = []
    for record in records:
      example = _render(record, level=level, fmt=fmt)
      out.append(len(_encode(vocabulary, example["inputs"])) + 1
                 + len(_encode(vocabulary, example["targets"])) + 1)
    return out

  return count


def load_params(model, checkpoint: str | os.PathLike) -> Any:
  """A model's parameters from a cdc checkpoint, or from external weights (a HF directory with
  config.json, a GGUF file) through ``model.load_external`` (a pretrained student).

  A LoRA run's checkpoint holds only its adapters: merge them into a full checkpoint first.
  """
  path = Path(checkpoint)
  if ((path / "config.json").exists() or path.suffix == ".gguf") and hasattr(model,
                                                                             "load_external"):
    return model.load_external(path)
  from cdc_jax.student import checkpoints

  return checkpoints.restore_params(path)[0]


def _model_batches(model, rows: Sequence[tuple[list[int], list[int]]], *, input_length: int,
                   target_length: int, batch_size: int):
  """Fixed-size numpy batches of (inputs, targets) ids in the model's own features.

  The model's feature converter (``FEATURE_CONVERTER_CLS``: encoder-decoder or
  prompt/completion) lays them out as training does, unpacked; EOS ends both.
  """
  import seqio
  import tensorflow as tf

  eos = getattr(model, "eos_id", 1)
  converter = getattr(model, "FEATURE_CONVERTER_CLS", seqio.EncDecFeatureConverter)(pack=False)
  spec = tf.TensorSpec([None], tf.int32)
  ds = tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.array(i[:input_length - 1] + [eos], np.int32),
                "targets": np.array(t[:target_length - 1] + [eos], np.int32)} for i, t in rows),
      output_signature={"inputs": spec, "targets": spec})
  converted = converter(ds, {"inputs": input_length, "targets": target_length})
  for batch in converted.batch(batch_size).as_numpy_iterator():
    n = len(next(iter(batch.values())))
    # Padding rows keep one compiled shape; their scores are dropped.
    yield n, {k: np.pad(v, [(0, batch_size - n)] + [(0, 0)] * (v.ndim - 1))
              for k, v in batch.items()}


def model_log_likelihood(*, model, vocabulary, params: Any | None = None,
                         checkpoint: str | os.PathLike | None = None, level: int = 6,
                         fmt: str = "cot_label", input_length: int = 128,
                         target_length: int = 128, batch_size: int = 32) -> Reward:
  """Mean per-token log-likelihood of each record's training target under a model.

  Targets are rendered as the training task ``cdc.<c>.L<level>.<fmt>``
  renders them (step_by_step: its explain part), tokenized with ``vocabulary``
  plus EOS, truncated to the lengths, laid out by the model's feature
  converter (an encoder-decoder T5 or a decoder-only student) and scored with
  its ``score_batch`` in fixed-size batches, divided by the scored tokens.
  The student gives the student reward; a stronger model the reference reward.
  """
  import jax

  if (params is None) == (checkpoint is None):
    raise ValueError("give exactly one of params= or checkpoint=")
  if params is None:
    params = load_params(model, checkpoint)
  score = jax.jit(model.score_batch)

  def reward(records: Sequence[records_lib.TraceRecord]) -> list[float]:
    rows = []
    for record in records:
      example = _render(record, level=level, fmt=fmt)
      rows.append((_encode(vocabulary, example["inputs"]), _encode(vocabulary, example["targets"])))
    out: list[float] = []
    for n, batch in _model_batches(model, rows, input_length=input_length,
                                   target_length=target_length, batch_size=batch_size):
      totals = np.asarray(score(params, batch))[:n]
      weights = batch.get("decoder_loss_weights", batch["decoder_target_tokens"] > 0)
      out.extend((totals / np.asarray(weights, np.float64)[:n].sum(axis=1)).tolist())
    return out

  return reward
