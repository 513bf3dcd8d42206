"""Early checks of entry points' numeric arguments: steps, batch sizes, lengths.

Called first thing by :func:`cdc_jax.train.train` and
:func:`cdc_jax.evaluate.evaluate`, so ``train_steps=-1`` does not exit 0 having
trained nothing and ``batch_size=0`` does not fail deep inside TensorFlow.

>>> require_positive_int(batch_size=4, log_every=10)
>>> require_positive_int(batch_size="four")
Traceback (most recent call last):
...
ValueError: batch_size='four': expected a positive integer, got str
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable, Mapping

# The percentile form of a feature length ('p95'), resolved from the data by
# cdc_jax.tasks.lengths; kept here so this check needs no seqio.
PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _require_int(minimum: int, what: str, arguments: Mapping[str, Any]) -> None:
  for name, value in arguments.items():
    if not _is_int(value) or value < minimum:
      kind = "" if _is_int(value) else f", got {type(value).__name__}"
      raise ValueError(f"{name}={value!r}: expected {what}{kind}")


def require_positive_int(**arguments: Any) -> None:
  """Raises ValueError naming the first argument that is not an ``int`` >= 1."""
  _require_int(1, "a positive integer", arguments)


def require_non_negative_int(**arguments: Any) -> None:
  """Raises ValueError naming the first argument that is not an ``int`` >= 0."""
  _require_int(0, "an integer >= 0", arguments)


def is_feature_length(value: Any) -> bool:
  """A positive number of tokens, or a percentile 'pN' (0 < N <= 100) of the data."""
  if isinstance(value, str):
    match = PERCENTILE.fullmatch(value.strip().lower())
    return match is not None and 0 < float(match.group(1)) <= 100
  return _is_int(value) and value > 0


def require_feature_lengths(task_feature_lengths: Mapping[str, Any], *,
                            required: tuple[str, ...] = ("inputs", "targets")) -> None:
  """Raises ValueError unless every ``required`` feature has a valid length."""
  if not isinstance(task_feature_lengths, Mapping):
    raise ValueError(f"task_feature_lengths={task_feature_lengths!r}: expected "
                     "{'inputs': length, 'targets': length}")
  for feature in required:
    if feature not in task_feature_lengths:
      raise ValueError(f"task_feature_lengths={dict(task_feature_lengths)!r}: no length for "
                       f"{feature!r}")
  for feature, length in task_feature_lengths.items():
    if not is_feature_length(length):
      raise ValueError(f"task_feature_lengths[{feature!r}]={length!r}: expected a positive "
                       "number of tokens or a percentile such as 'p95'")


def exit_status(run: Callable[[], Any]) -> int:
  """A command line's exit status: 0 after ``run()``, 1 with ``error: ...`` on bad input.

  Bad input is a ``ValueError`` (schema errors such as ``RecordError`` are
  ones) or an ``OSError`` (a missing or unreadable file); the message names
  the file, line or field. Anything else is a bug and propagates.
  """
  try:
    run()
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0
