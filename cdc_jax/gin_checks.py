"""Checks of a gin configuration that gin itself does not make, run before any work starts.

gin accepts ``--gin.TRAIN_STEP=5`` (a new macro that nothing reads), reports a
missing macro only when a function runs and names only its scope, says
``Unable to parse value`` without the flag, and leaves ``TRAIN_STEPS='five'``
to fail deep in the trainer. :func:`apply_bindings` parses bindings one at a
time and names the flag; :func:`missing_macros` and :func:`check_macro_values`
name the macro and the flag that sets it. Only entry points (through
:mod:`cdc_jax.config_cli`) use this module: library code stays gin-free.

gin keeps its parsed configuration in private module state (``_CONFIG``,
``_REGISTRY``); this module reads it, and tests pin the behaviour for the
gin-config version in ``requirements/``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any, Iterator, Sequence

import gin
from gin import config as gin_config

from cdc_jax import arguments

_MACRO_NAME = re.compile(r"[A-Za-z_]\w*\Z")
_MACRO_USE = re.compile(r"%([A-Za-z_]\w*)")
_MACRO = "gin.macro"

# Step, batch, size and length macros of gin/: positive integers (None allowed
# where the function takes None). A negative TRAIN_STEPS trains nothing and
# exits 0; BATCH_SIZE=0 fails inside TensorFlow.
NON_NEGATIVE_INT_MACROS = ("TRAIN_STEPS",)  # 0 saves the initial student (zero-shot eval).
POSITIVE_INT_MACROS = (
    "BATCH_SIZE", "EVAL_BATCH_SIZE", "INFER_BATCH_SIZE", "ACCUMULATION_STEPS",
    "CHECKPOINT_EVERY", "LOG_EVERY", "NUM_BEAMS", "VOCAB_SIZE", "WORKERS", "KEY_TOKENS_K",
    "ATTRIBUTION_INPUT_LENGTH", "ATTRIBUTION_TARGET_LENGTH")
OPTIONAL_POSITIVE_INT_MACROS = ("KEEP_CHECKPOINTS",)
LENGTHS_MACROS = ("TASK_FEATURE_LENGTHS",)


class GinConfigError(ValueError):
  """A gin binding or configuration that names, misses or mistypes something."""


def _references(value: Any) -> Iterator[gin_config.ConfigurableReference]:
  if isinstance(value, gin_config.ConfigurableReference):
    yield value
  elif isinstance(value, dict):
    for key, item in value.items():
      yield from _references(key)
      yield from _references(item)
  elif isinstance(value, (list, tuple, set, frozenset)):
    for item in value:
      yield from _references(item)


def defined_macros() -> set[str]:
  """Macros the parsed configuration defines (``NAME = value``)."""
  config = gin_config._CONFIG  # pylint: disable=protected-access
  return {scope for scope, selector in config if selector == _MACRO}


def used_macros() -> set[str]:
  """Macros the parsed configuration refers to (``%NAME``)."""
  used = set()
  for params in gin_config._CONFIG.values():  # pylint: disable=protected-access
    for ref in _references(params):
      scope, selector = ref.config_key
      if selector == _MACRO:
        used.add(scope)
  return used


def _closest(name: str, candidates: Sequence[str] | set[str]) -> str:
  candidates = sorted(candidates)
  folded = {c.casefold(): c for c in candidates}
  match = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
  return f"; did you mean {folded[match[0]]!r}?" if match else ""


def _flag(name: str, value: str) -> str:
  return f"--gin.{name}={value}"


def _explain(error: ValueError) -> str:
  """gin's first error line plus the closest configurable or parameter name."""
  message = str(error).strip().split("\n")[0]
  registry = gin_config._REGISTRY  # pylint: disable=protected-access
  missing_param = re.match(r"Configurable '(.+)' doesn't have a parameter named '(.+)'", message)
  if missing_param:
    try:
      fn = registry.get_match(missing_param[1]).wrapped
      params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError, AttributeError):
      params = []
    return message + _closest(missing_param[2], params)
  missing_configurable = re.match(r"No configurable matching '(.+)'", message)
  if missing_configurable:
    suffixes = set()
    for selector, _ in registry.items():
      parts = selector.split(".")
      suffixes.update(".".join(parts[i:]) for i in range(len(parts)))
    return message + _closest(missing_configurable[1], suffixes)
  return message


def apply_bindings(bindings: Sequence[str]) -> None:
  """Parses ``NAME = VALUE`` bindings one at a time over the parsed gin files.

  Raises :class:`GinConfigError` naming the flag for a macro that no gin file
  defines or uses (with the closest known one), an unknown configurable or
  parameter (likewise), or a value that does not parse (an unquoted string).
  """
  known = defined_macros() | used_macros()
  # A binding may introduce a macro that another binding then uses.
  introduced = {m for b in bindings for m in _MACRO_USE.findall(b.partition("=")[2])}
  for binding in bindings:
    name, sep, value = binding.partition("=")
    name, value = name.strip(), value.strip()
    flag = _flag(name, value)
    if sep and _MACRO_NAME.match(name) and name not in known | introduced:
      raise GinConfigError(f"{flag}: unknown macro {name!r}{_closest(name, known)} (no gin file "
                           "defines or uses it, so it would change nothing)")
    try:
      gin.parse_config(binding)
    except SyntaxError:
      quoted = value[:1] in ("'", '"')
      hint = "" if quoted else (f"; a string value needs quotes inside the flag: "
                                f"--gin.{name}=\"'{value}'\"")
      raise GinConfigError(f"{flag}: cannot parse the value {value!r}{hint}") from None
    except ValueError as e:
      raise GinConfigError(f"{flag}: {_explain(e)}") from None


def missing_macros(selector: str) -> list[str]:
  """Macros that configurable ``selector`` (e.g. ``cdc_jax.train.train``) needs and nothing sets.

  Follows the configurable's bindings through macros and ``@references``.
  """
  config = gin_config._CONFIG  # pylint: disable=protected-access
  missing, seen = set(), set()
  todo = [key for key in config if key[1] == selector]
  while todo:
    key = todo.pop()
    if key in seen:
      continue
    seen.add(key)
    for ref in _references(config.get(key, {})):
      scope, target = ref.config_key
      if target == _MACRO:
        if (scope, _MACRO) in config:
          todo.append((scope, _MACRO))
        else:
          missing.add(scope)
      else:
        todo.extend(k for k in config if k[1] == target and k[0] in ("", scope))
  return sorted(missing)


def check_required_macros(selector: str) -> None:
  """Raises :class:`GinConfigError` naming each unset macro that ``selector`` needs."""
  missing = missing_macros(selector)
  if missing:
    flags = " ".join(f"--gin.{m}=..." for m in missing)
    raise GinConfigError(f"required macro(s) not set for {selector}: {', '.join(missing)} "
                         f"(set them in a gin file or with {flags})")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def check_macro_values() -> None:
  """Raises :class:`GinConfigError` for a step, batch or length macro that is not positive."""
  config = gin_config._CONFIG  # pylint: disable=protected-access

  def value_of(name: str) -> tuple[bool, Any]:
    params = config.get((name, _MACRO))
    if params is None or any(True for _ in _references(params["value"])):
      return False, None  # Unset (see missing_macros) or a reference: checked where it is bound.
    return True, params["value"]

  def fail(name: str, value: Any, expected: str) -> None:
    raise GinConfigError(f"{name} = {value!r}: expected {expected} (set with --gin.{name}=...)")

  for name in NON_NEGATIVE_INT_MACROS:
    is_set, value = value_of(name)
    if is_set and not (_is_int(value) and value >= 0):
      fail(name, value, "an integer >= 0")
  for name in POSITIVE_INT_MACROS + OPTIONAL_POSITIVE_INT_MACROS:
    is_set, value = value_of(name)
    if is_set and not (_is_int(value) and value > 0) and not (
        value is None and name in OPTIONAL_POSITIVE_INT_MACROS):
      fail(name, value, "a positive integer" + (
          " or None" if name in OPTIONAL_POSITIVE_INT_MACROS else ""))
  for name in LENGTHS_MACROS:
    is_set, value = value_of(name)
    if is_set and not (isinstance(value, dict) and value and all(
        isinstance(k, str) and arguments.is_feature_length(v) for k, v in value.items())):
      fail(name, value, "{feature: length}, a length being a positive number of tokens or a "
           "percentile such as 'p95'; e.g. {'inputs': 128, 'targets': 'p95'}")
