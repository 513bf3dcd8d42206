"""Answers: parsing them out of generated text, normalising and comparing them.

One implementation serves every reader of answers: the importers of published
CoT data, the teacher launcher and the student's evaluator. Parsing is total:
text with no recognisable answer yields ``None`` (scored as wrong), never an
exception.
"""

from __future__ import annotations

import math
import re
import string
from typing import Sequence

ANSWER_TYPES = ("choice", "boolean", "number", "text")

# Markers after which an answer follows, most specific first. The last
# occurrence in the text wins (a CoT may mention "the answer" earlier).
_MARKERS = re.compile(
    r"(?:so\s+the\s+answer\s+is|the\s+answer\s+is|answer\s*is|answer\s*:|####)\s*:?",
    re.IGNORECASE)
# What ends the answer segment in the cdc formats ("answer: X explanation: ...").
_SEGMENT_END = re.compile(r"\s+(?:explanation|reason|because)\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"[-−]?\$?\s?\d[\d,]*(?:\.\d+)?|[-−]?\.\d+")
_CHOICE_LETTER = re.compile(r"^\(?([a-eA-E])\)?(?:[.:)\s]|$)")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_TRUE = {"yes", "true", "correct", "right"}
_FALSE = {"no", "false", "incorrect", "wrong"}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Built once: the importers normalise ~1e5 answers and choices per dataset.
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def check_answer_type(answer_type: object) -> str:
  if answer_type not in ANSWER_TYPES:
    raise ValueError(f"unknown answer_type {answer_type!r}: expected one of {ANSWER_TYPES}")
  return answer_type  # type: ignore[return-value]


def answer_segment(text: str) -> str:
  """The part of ``text`` that states the answer.

  >>> answer_segment("Bats fly. So the answer is yes. Explanation: none")
  'yes.'
  >>> answer_segment("answer: 42 explanation: 6 x 7 = 42")
  '42'
  """
  matches = list(_MARKERS.finditer(text))
  segment = text[matches[-1].end():] if matches else text
  end = _SEGMENT_END.search(segment)
  if end and (matches or end.start() > 0):
    segment = segment[:end.start()]
  return segment.strip()


def parse_number(text: str) -> float | None:
  """The first number in ``text`` ('$1,234.50 dollars' -> 1234.5), or None."""
  match = _NUMBER.search(text)
  if not match:
    return None
  raw = match.group(0).replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
  try:
    value = float(raw)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


def format_number(value: float) -> str:
  """Canonical text of a number: integers without '.0', others trimmed."""
  if float(value).is_integer():
    return str(int(value))
  return f"{value:.6f}".rstrip("0").rstrip(".")


def normalize_text(text: str) -> str:
  """Lower case, no punctuation or articles, single spaces."""
  text = text.lower().translate(_NO_PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def _parse_boolean(segment: str) -> str | None:
  words = normalize_text(segment).split()
  if not words:
    return None
  if words[0] in _TRUE:
    return "yes"
  if words[0] in _FALSE:
    return "no"
  return None


def _parse_choice(segment: str, choices: Sequence[str]) -> str | None:
  letter = _CHOICE_LETTER.match(segment.strip())
  if letter:
    index = _LETTERS.index(letter.group(1).lower())
    if index < len(choices):
      return choices[index]
  norm = normalize_text(segment)
  normalized = [normalize_text(c) for c in choices]
  for choice, n in zip(choices, normalized):
    if norm == n:
      return choice
  # Longest choice text contained in the segment ("(c) the river" -> "river").
  contained = [(len(n), c) for c, n in zip(choices, normalized)
               if n and re.search(rf"\b{re.escape(n)}\b", norm)]
  return max(contained)[1] if contained else None


def normalize_answer(answer: str, answer_type: str,
                     choices: Sequence[str] | None = None) -> str | None:
  """Canonical form of an answer string, or None if it is not one.

  boolean -> 'yes'/'no'; number -> canonical number text; choice -> the
  matching entry of ``choices``; text -> :func:`normalize_text`.
  """
  check_answer_type(answer_type)
  if answer_type == "boolean":
    return _parse_boolean(answer)
  if answer_type == "number":
    value = parse_number(answer)
    return None if value is None else format_number(value)
  if answer_type == "choice":
    if not choices:
      return None
    return _parse_choice(answer, choices)
  norm = normalize_text(answer)
  return norm or None


def extract_answer(text: str, answer_type: str,
                   choices: Sequence[str] | None = None) -> str | None:
  """Parses the answer out of generated text (a bare label or a CoT).

  Looks after the last answer marker ('The answer is', 'So the answer is',
  'answer:', '####'); without one the whole text is the answer (label-only
  output), except for numbers, where the last number in the text is taken.

  >>> extract_answer("3 + 4 = 7. So the answer is 7 apples.", "number")
  '7'
  >>> extract_answer("So the answer is (c) a river.", "choice", ["sea", "lake", "river"])
  'river'
  >>> extract_answer("<unk> garbled", "boolean") is None
  True
  >>> extract_answer("So she has 15. The answer is 70 - 15 = 55", "number")
  '55'
  """
  check_answer_type(answer_type)
  if not isinstance(text, str):
    return None
  has_marker = bool(_MARKERS.search(text))
  segment = answer_segment(text)
  if answer_type == "number" and not has_marker:
    numbers = _NUMBER.findall(text)
    segment = numbers[-1] if numbers else ""
  elif answer_type == "number":
    # Teachers state some answers as an equation ('The answer is 70 - 15 = 55'):
    # the result follows the last '=' of the answer's first clause.
    clause = re.split(r"[.;,]\s|\n", segment + " ")[0]
    if "=" in clause and _NUMBER.search(clause.rsplit("=", 1)[1]):
      segment = clause.rsplit("=", 1)[1]
  if answer_type == "text" and not has_marker:
    segment = segment.rstrip(".")
  if answer_type == "text":
    # A free-text answer ends at its sentence.
    segment = re.split(r"(?<=[^\d])\.\s", segment + " ")[0]
  return normalize_answer(segment, answer_type, choices)


def answers_match(predicted: str | None, gold: str, answer_type: str,
                  choices: Sequence[str] | None = None, *, rel_tol: float = 1e-6) -> bool:
  """Whether a parsed prediction equals the gold answer (numbers numerically)."""
  if predicted is None:
    return False
  gold_norm = normalize_answer(gold, answer_type, choices)
  if answer_type == "number":
    a, b = parse_number(predicted), parse_number(gold)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)
  pred_norm = normalize_answer(predicted, answer_type, choices)
  return pred_norm is not None and pred_norm == gold_norm


# The closing answer sentence the formats append themselves; connectives
# before it ("So, the answer is") go with it.
_FINAL_ANSWER = re.compile(
    r"(?:\b(?:so|therefore|thus|hence)\s*,?\s+)?\bthe\s+(?:final\s+)?answer\s+is\b", re.IGNORECASE)
_TRAILING = " \t\r\n,;:-"


def strip_answer_sentence(text: str) -> str:
  """The rationale without its closing 'The answer is X' sentence(s).

  Everything from the last 'the answer is' on is the answer statement (teachers
  sometimes continue it: 'The answer is 12, not 13 ...'), and so is a repeated
  statement just before it. A cut rationale ends with a full stop; text
  without 'the answer is' is returned whole.

  >>> strip_answer_sentence("Bats are mammals. So, the answer is yes.")
  'Bats are mammals.'
  >>> strip_answer_sentence("2 + 2 = 4.\\n The answer is 4")
  '2 + 2 = 4.'
  >>> strip_answer_sentence("Lips are on the mouth, so the answer is A. The answer is A")
  'Lips are on the mouth.'
  """
  matches = list(_FINAL_ANSWER.finditer(text))
  if not matches:
    return text.strip()
  text = text[:matches[-1].start()].rstrip(_TRAILING)
  # A last sentence that states the answer again ('Lips are on the mouth, so
  # the answer is A. The answer is A') loses that statement too.
  while matches := list(_FINAL_ANSWER.finditer(text)):
    boundary = max(text.rfind(end, 0, len(text) - 1) for end in (". ", "\n", "! ", "? "))
    if matches[-1].start() <= boundary:
      break
    text = text[:matches[-1].start()].rstrip(_TRAILING)
  text = text.strip()
  # The formats append 'The answer is X' as a sentence of its own.
  return text + "." if text and text[-1] not in ".!?" else text
