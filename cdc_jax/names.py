"""The naming grammar of cdc_jax: community, task and mixture names.

Tasks are ``cdc.<community>.L<level>.<format>`` and coalition mixtures
``cdc.<coalition>.L<level>.<format>``; the two sub-tasks of the
``step_by_step`` format add ``:predict`` / ``:explain``. Every name that
cdc_jax registers with SeqIO is built here, so the grammar lives in one place.
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*\Z")
LEVELS = (1, 2, 3, 4, 5, 6)
FULL_COT_LEVEL = 6
FORMATS = ("label_only", "cot_label", "label_cot", "step_by_step", "permuted_cot", "key_tokens")
STEP_BY_STEP_PARTS = ("predict", "explain")
PREFIX = "cdc"


def validate_name(name: object, *, what: str = "community") -> str:
  """Returns ``name`` if it is an identifier ``[a-z][a-z0-9_]*``, else raises.

  Such names cannot escape a directory (no ``/``, ``.``) and are valid in
  SeqIO task names.
  """
  if not isinstance(name, str) or not NAME_PATTERN.match(name):
    raise ValueError(
        f"invalid {what} name {name!r}: expected an identifier matching "
        "[a-z][a-z0-9_]* (lower-case letters, digits and '_', starting with a letter)")
  return name


def validate_level(level: object) -> int:
  """Returns ``level`` as an int in 1..6, else raises."""
  if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
    raise ValueError(f"invalid rationale level {level!r}: expected one of {LEVELS}")
  return level


def validate_format(fmt: object) -> str:
  """Returns ``fmt`` if it is a known target format, else raises."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown target format {fmt!r}: expected one of {FORMATS}")
  return fmt  # type: ignore[return-value]


def task_name(community: str, level: int, fmt: str, part: str | None = None) -> str:
  """Name of a community's task (or of a coalition's mixture).

  >>> task_name("gsm", 6, "cot_label")
  'cdc.gsm.L6.cot_label'
  >>> task_name("gsm", 3, "step_by_step", "explain")
  'cdc.gsm.L3.step_by_step:explain'
  """
  validate_name(community)
  validate_level(level)
  validate_format(fmt)
  name = f"{PREFIX}.{community}.L{level}.{fmt}"
  if part is None:
    return name
  if fmt != "step_by_step" or part not in STEP_BY_STEP_PARTS:
    raise ValueError(f"part {part!r} only exists for step_by_step: {STEP_BY_STEP_PARTS}")
  return f"{name}:{part}"


mixture_name = task_name  # A coalition's mixture follows the same grammar.

_TASK_RE = re.compile(
    rf"{PREFIX}\.(?P<community>[a-z][a-z0-9_]*)\.L(?P<level>[1-6])\.(?P<format>[a-z_]+)"
    r"(?::(?P<part>predict|explain))?\Z")


def parse_task_name(name: str) -> tuple[str, int, str, str | None]:
  """Inverse of :func:`task_name`: ``(community, level, format, part)``."""
  match = _TASK_RE.match(name)
  if not match or match["format"] not in FORMATS:
    raise ValueError(f"{name!r} is not a cdc task name like 'cdc.<community>.L<level>.<format>'")
  return match["community"], int(match["level"]), match["format"], match["part"]
