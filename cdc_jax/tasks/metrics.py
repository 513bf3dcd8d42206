"""Answer extraction (postprocessing) and answer accuracy, SeqIO style.

``postprocess_answer`` turns a target into the gold answer and a prediction
into the answer parsed from it, both canonical (see :mod:`cdc_jax.answers`);
malformed output parses to ``""`` and counts as wrong. Metrics take
``(targets, predictions)`` and return a dict.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from cdc_jax import answers as answers_lib

NO_ANSWER = ""


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if hasattr(value, "numpy"):
    return _text(value.numpy())
  if hasattr(value, "item") and getattr(value, "shape", None) == ():
    return _text(value.item())
  return str(value)


def decode_choices(value: Any) -> list[str] | None:
  """The ``choices`` feature (JSON text; '' or 'null' when absent)."""
  text = _text(value)
  return json.loads(text) if text and text != "null" else None


def postprocess_answer(output: Any, example: Mapping[str, Any] | None = None,
                       is_target: bool = False) -> str:
  """SeqIO ``postprocess_fn``: the canonical answer of a target or prediction.

  For targets the gold ``answer`` feature is used (eval targets are answers,
  whatever the format); predictions are parsed with the example's answer type.
  """
  if example is None:
    raise ValueError("postprocess_answer needs the example (answer_type, choices)")
  answer_type = _text(example["answer_type"])
  choices = decode_choices(example["choices"])
  if is_target:
    gold = answers_lib.normalize_answer(_text(example["answer"]), answer_type, choices)
    if gold is None:
      raise ValueError(f"gold answer {_text(example['answer'])!r} is not a valid {answer_type}")
    return gold
  parsed = answers_lib.extract_answer(_text(output), answer_type, choices)
  return NO_ANSWER if parsed is None else parsed


def _same(target: str, prediction: str) -> bool:
  if prediction == NO_ANSWER:
    return False
  a, b = answers_lib.parse_number(target), answers_lib.parse_number(prediction)
  if a is not None and b is not None and answers_lib.format_number(a) == target:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
  return target == prediction


def answer_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Exact-answer accuracy in percent (numbers compared numerically) and the
  percentage of predictions in which an answer was found."""
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
  if not targets:
    return {"accuracy": 0.0, "answered": 0.0}
  correct = sum(_same(t, p) for t, p in zip(targets, predictions))
  answered = sum(p != NO_ANSWER for p in predictions)
  return {"accuracy": 100.0 * correct / len(targets),
          "answered": 100.0 * answered / len(targets)}
