"""Rewards of a trace (higher = the model fits it better) and its training-token count.

- :func:`model_log_likelihood`: the mean per-token log-likelihood of the
  trace's training target under a model wrapper (an encoder-decoder T5 or a
  decoder-only student; the student, or a stronger reference model), scored
  as the training task renders it.
- :func:`teacher_correctness`: 1/0 from the record's ``teacher_answer``.
- :func:`vocabulary_token_counter`: tokens a trace costs to train on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from cdc_jax.contribution.budgets import TokenCounter
from cdc_jax.data import records as records_lib

if TYPE_CHECKING:  # seqio and TensorFlow load when a reward is built, not at import.
  from cdc_jax.tasks import registry

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


def _render(record: records_lib.TraceRecord, *, level: int, fmt: str,
            options: registry.TaskOptions) -> dict[str, str]:
  """``record``'s example in the task ``cdc.<c>.L<level>.<fmt>`` (step_by_step: explain)."""
  from cdc_jax.tasks import formats

  return formats.render_example(
      fmt=fmt, part="explain" if fmt == "step_by_step" else None, question=record.question,
      answer=record.answer, rationale=record.rationales.get(level), choices=record.choices,
      example_id=record.id, seed=options.permute_seed, k=options.key_tokens_k,
      selector=options.key_token_selector)


def _encode(vocabulary, text: str) -> list[int]:
  return list(vocabulary.encode(text)) if text.strip() else []


def _task_options(options: registry.TaskOptions | None) -> registry.TaskOptions:
  from cdc_jax.tasks import registry

  return registry.TaskOptions() if options is None else options


def _encoder(vocabulary, *, level: int, fmt: str, options: registry.TaskOptions
             ) -> Callable[[records_lib.TraceRecord], tuple[list[int], list[int]]]:
  """record -> (inputs, targets) ids as the task tokenizes them: inputs in the prompt
  template, no EOS yet."""
  from cdc_jax.tasks import registry

  prefix, suffix = registry.prompt_template(options, vocabulary).split("{inputs}")

  def encode(record: records_lib.TraceRecord) -> tuple[list[int], list[int]]:
    example = _render(record, level=level, fmt=fmt, options=options)
    return (_encode(vocabulary, prefix + example["inputs"] + suffix),
            _encode(vocabulary, example["targets"]))

  return encode


def vocabulary_token_counter(vocabulary, *, level: int = 6, fmt: str = "cot_label",
                             options: registry.TaskOptions | None = None) -> TokenCounter:
  """Training tokens per record: its rendered prompt and targets with the EOS the tasks append
  (untruncated). ``options``: those the tasks are registered with (None: ``TaskOptions()``, a
  T5's; a decoder-only student's put the inputs in a chat prompt, with no EOS after them)."""
  options = _task_options(options)
  encode = _encoder(vocabulary, level=level, fmt=fmt, options=options)

  def count(records: Sequence[records_lib.TraceRecord]) -> list[int]:
    out = []
    for record in records:
      inputs, targets = encode(record)
      out.append(len(inputs) + int(options.inputs_eos) + len(targets) + 1)
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
                   target_length: int, batch_size: int, inputs_eos: bool):
  """Fixed-size numpy batches of (inputs, targets) ids in the model's own features.

  The model's feature converter (``FEATURE_CONVERTER_CLS``: encoder-decoder or
  prompt/completion) lays them out as training does, unpacked; EOS ends the
  targets, and the inputs iff ``inputs_eos``.
  """
  import seqio
  import tensorflow as tf

  eos = getattr(model, "eos_id", 1)
  converter = getattr(model, "FEATURE_CONVERTER_CLS", seqio.EncDecFeatureConverter)(pack=False)
  spec = tf.TensorSpec([None], tf.int32)
  close = [eos] if inputs_eos else []
  ds = tf.data.Dataset.from_generator(
      lambda: ({"inputs": np.array(i[:input_length - len(close)] + close, np.int32),
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
                         fmt: str = "cot_label", options: registry.TaskOptions | None = None,
                         input_length: int = 128, target_length: int = 128,
                         batch_size: int = 32) -> Reward:
  """Mean per-token log-likelihood of each record's training target under a model.

  Examples are rendered as the training task ``cdc.<c>.L<level>.<fmt>``
  renders them (step_by_step: its explain part) under the tasks' ``options``
  (None: ``TaskOptions()``, a T5's; a decoder-only student's, as its model gin
  binds ``catalog.default_options``, put the inputs in its chat prompt with no
  EOS after them), tokenized with ``vocabulary``, truncated to the lengths,
  laid out by the model's feature converter (an encoder-decoder T5 or a
  decoder-only student) and scored with its ``score_batch`` in fixed-size
  batches, divided by the scored tokens.
  The student gives the student reward; a stronger model the reference reward.
  """
  import jax

  if (params is None) == (checkpoint is None):
    raise ValueError("give exactly one of params= or checkpoint=")
  if params is None:
    params = load_params(model, checkpoint)
  options = _task_options(options)
  encode = _encoder(vocabulary, level=level, fmt=fmt, options=options)
  score = jax.jit(model.score_batch)

  def reward(records: Sequence[records_lib.TraceRecord]) -> list[float]:
    rows = [encode(r) for r in records]
    out: list[float] = []
    for n, batch in _model_batches(model, rows, input_length=input_length,
                                   target_length=target_length, batch_size=batch_size,
                                   inputs_eos=options.inputs_eos):
      totals = np.asarray(score(params, batch))[:n]
      weights = batch.get("decoder_loss_weights", batch["decoder_target_tokens"] > 0)
      out.extend((totals / np.asarray(weights, np.float64)[:n].sum(axis=1)).tolist())
    return out

  return reward
