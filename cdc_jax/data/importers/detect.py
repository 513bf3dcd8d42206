"""Detecting what a new dataset holds: its answer type and how its choices are written.

Importers of open layouts call these when no flag says; the detected values
are reported, so a wrong guess is visible and can be overridden.
"""

from __future__ import annotations

import re
from typing import Iterable

from cdc_jax import answers as answers_lib

_BOOLEAN_WORDS = {"yes", "no", "true", "false"}
_NUMBER = re.compile(r"[-+]?\$?\s*(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?\s*%?")
_CHOICES_HEADER = re.compile(r"\banswer\s+choices\s*:", re.IGNORECASE)


def detect_answer_type(answers: Iterable[str], *, has_choices: bool = False) -> str:
  """'choice' if the questions list choices, else 'boolean', 'number' or 'text' by the answers.

  Every answer must be a bare yes/no/true/false for 'boolean' and a bare
  number for 'number'; anything else is 'text'.

  >>> detect_answer_type(["True", "no", "Yes"])
  'boolean'
  >>> detect_answer_type(["12", "$1,200", "3.5"])
  'number'
  >>> detect_answer_type(["12", "Paris"])
  'text'
  """
  if has_choices:
    return "choice"
  values = [a.strip() for a in answers if isinstance(a, str) and a.strip()]
  if not values:
    raise ValueError("cannot detect the answer type: no answers")
  if all(answers_lib.normalize_text(v) in _BOOLEAN_WORDS for v in values):
    return "boolean"
  if all(_NUMBER.fullmatch(v) and answers_lib.parse_number(v) is not None for v in values):
    return "number"
  return "text"


def has_choice_header(text: str) -> bool:
  """Whether an instruction lists answer choices ('Answer choices: A: ...')."""
  return bool(_CHOICES_HEADER.search(text))


def choice_style(text: str) -> str:
  """'lines' for 'Answer Choices:\\nA. x\\nB. y', 'comma' for 'Answer choices: A: x, B: y'.

  >>> choice_style("Where? Answer choices: A: park, B: sea")
  'comma'
  >>> choice_style("Where? Answer Choices:\\nA. park\\nB. sea")
  'lines'
  """
  header = _CHOICES_HEADER.search(text)
  if header is None:
    raise ValueError("no 'Answer choices:' in the instruction")
  return "lines" if text[header.end():].lstrip(" \t").startswith("\n") else "comma"


_ANSWER_MARKER = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b|\banswer\s*:|####", re.IGNORECASE)


def states_answer(text: str) -> bool:
  """Whether a rationale states its answer ('... So the answer is 12.').

  >>> states_answer("Bats nurse their young. So the answer is yes.")
  True
  >>> states_answer("Bats nurse their young.")
  False
  """
  return bool(_ANSWER_MARKER.search(text))
