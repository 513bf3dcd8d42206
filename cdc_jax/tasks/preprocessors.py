"""SeqIO preprocessors and the data source of community records."""

from __future__ import annotations

import json
import logging
from typing import Sequence

import seqio
import tensorflow as tf

from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.tasks import formats

RAW_FEATURES = ("id", "question", "choices", "answer", "answer_type") + tuple(
    f"rationale_{level}" for level in names.LEVELS)
"""The features a community's data source yields: ``choices`` is JSON text
(``null`` when absent) and ``rationale_<level>`` is '' when a record lacks it."""


def record_features(record: records_lib.TraceRecord) -> dict[str, str]:
  """A record as the flat string features of :data:`RAW_FEATURES`."""
  out = {"id": record.id, "question": record.question,
         "choices": json.dumps(list(record.choices) if record.choices else None),
         "answer": record.answer, "answer_type": record.answer_type}
  for level in names.LEVELS:
    out[f"rationale_{level}"] = record.rationales.get(level, "")
  return out


def records_source(community: records_lib.Community, *, level: int,
                   require_rationale: bool) -> seqio.FunctionDataSource:
  """A data source over a community's records for tasks at ``level``.

  Training splits of formats that need a rationale skip records without one
  at ``level`` (logged with counts); evaluation splits keep every record, as
  eval targets are answers.
  """
  features = {split: [record_features(r) for r in recs]
              for split, recs in community.records.items()}
  counts = {}
  for split, rows in features.items():
    keep = [r for r in rows if r[f"rationale_{level}"]] if (
        require_rationale and split == "train") else rows
    if len(keep) < len(rows):
      logging.info("%s L%d %s: %d of %d records lack this level and are left out of training",
                   community.name, level, split, len(rows) - len(keep), len(rows))
    features[split] = keep
    counts[split] = len(keep)

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # One in-memory shard; seqio shuffles examples.
    rows = features[split]
    if not rows:  # Refused where used: else a bare StopIteration or a seqio unpack error.
      file = community.directory / community.manifest.splits[split]
      lacking = (f" with a level-{level} rationale (of {len(community.records[split])})"
                 if require_rationale and split == "train" and community.records[split] else "")
      use = "train on" if split == "train" else "evaluate"
      raise ValueError(f"{file}: split {split!r} of community {community.name!r} has no "
                       f"records{lacking}: nothing to {use}")
    return tf.data.Dataset.from_tensor_slices(
        {key: tf.constant([r[key] for r in rows], dtype=tf.string) for key in RAW_FEATURES})

  return seqio.FunctionDataSource(dataset_fn, splits=tuple(features), num_input_examples=counts)


def _decode(tensor: tf.Tensor) -> str:
  return tensor.numpy().decode("utf-8")


def format_examples(dataset: tf.data.Dataset, *, level: int, fmt: str, part: str | None = None,
                    seed: int = 0, k: int = 8, selector: str = "salience") -> tf.data.Dataset:
  """Renders raw record features as ``inputs``/``targets`` text in format ``fmt``.

  Keeps ``id``, ``answer``, ``answer_type`` and ``choices`` for the metrics.
  Input: {"question": "Is 3 > 2?", "answer": "yes", "rationale_6": "3 is more
  than 2.", ...}; output with fmt="cot_label", level=6: {"inputs": "Is 3 > 2?",
  "targets": "3 is more than 2. So the answer is yes.", "answer": "yes", ...}.
  """
  names.validate_level(level)
  names.validate_format(fmt)
  formats.get_key_token_selector(selector)  # Fail at registration, not mid-training.

  def render(example_id, question, choices, answer, rationale):
    rationale = _decode(rationale)
    out = formats.render_example(
        fmt=fmt, part=part, question=_decode(question), answer=_decode(answer),
        rationale=rationale or None, choices=json.loads(_decode(choices)),
        example_id=_decode(example_id), seed=seed, k=k, selector=selector)
    return out["inputs"], out["targets"]

  def fn(ex):
    inputs, targets = tf.py_function(
        render, [ex["id"], ex["question"], ex["choices"], ex["answer"], ex[f"rationale_{level}"]],
        [tf.string, tf.string])
    inputs.set_shape([])
    targets.set_shape([])
    return {"id": ex["id"], "inputs": inputs, "targets": targets, "answer": ex["answer"],
            "answer_type": ex["answer_type"], "choices": ex["choices"]}

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def wrap_inputs(dataset: tf.data.Dataset, *, template: str) -> tf.data.Dataset:
  """``inputs`` placed into ``template`` at ``{inputs}`` (e.g. a chat template's user turn).

  Input: {"inputs": "Is 3 > 2?"}, template "<user>{inputs}</user><bot>";
  output: {"inputs": "<user>Is 3 > 2?</user><bot>"}.
  """
  prefix, suffix = template.split("{inputs}")

  def fn(ex):
    return {**ex, "inputs": tf.strings.join([prefix, ex["inputs"], suffix])}

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def preprocessor_chain(*, level: int, fmt: str, part: str | None, seed: int, k: int,
                       selector: str, prompt_template: str = "{inputs}") -> Sequence:
  """Format, wrap the inputs in the prompt template, tokenize, append EOS."""
  import functools

  chain = [functools.partial(format_examples, level=level, fmt=fmt, part=part, seed=seed, k=k,
                             selector=selector)]
  if prompt_template != "{inputs}":
    chain.append(functools.partial(wrap_inputs, template=prompt_template))
  return chain + [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
