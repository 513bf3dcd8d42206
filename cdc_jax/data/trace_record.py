"""The schema of community records: :class:`TraceRecord` and :class:`CommunityManifest`.

A record is one question of a community with its gold answer and the
teacher's rationales at levels 1..6; a manifest says what a community
directory holds. Both validate on construction; a record read from a file
raises :class:`RecordError` naming the file, line and field (see
:mod:`cdc_jax.io`). Reading and writing community directories is
:mod:`cdc_jax.data.records`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from cdc_jax import answers as answers_lib
from cdc_jax import io as io_lib
from cdc_jax import names

SPLITS = ("train", "validation", "test")
# Level keys are exactly these strings: "06", " 6 " or "+6" would alias level 6
# and one of two such keys would silently replace the other.
_LEVEL_KEYS = {str(level): level for level in names.LEVELS}


class RecordError(io_lib.SchemaError):
  """A record or manifest that does not follow the schema (``path:line: field 'f': ...``)."""


@dataclasses.dataclass(frozen=True)
class TraceRecord:
  """One question of a community with its answer and the teacher's rationales.

  Attributes:
    id: unique within the community.
    community: the community's name (an identifier).
    split: 'train', 'validation' or 'test'.
    question: the question text.
    answer: the gold answer; for 'choice' one of ``choices``.
    answer_type: 'choice', 'boolean', 'number' or 'text'.
    rationales: granularity level (1..6, 6 = full CoT) -> rationale text; any
      subset of levels may be present.
    choices: the options of a multiple-choice question, else None.
    teacher: who wrote the rationales (model name, 'human', 'oracle').
    teacher_answer: the answer parsed from the teacher's CoT, if known.
    provenance: at least 'source' and 'license'; producers add more (prompts,
      privacy budget, ...).
  """
  id: str
  community: str
  split: str
  question: str
  answer: str
  answer_type: str
  rationales: Mapping[int, str]
  choices: tuple[str, ...] | None = None
  teacher: str = "unknown"
  teacher_answer: str | None = None
  provenance: Mapping[str, Any] = dataclasses.field(
      default_factory=lambda: {"source": "unknown", "license": "unknown"})

  def __post_init__(self):
    validate_record(self)

  @property
  def teacher_correct(self) -> bool | None:
    """Whether the teacher's answer matches the gold one (None if unknown)."""
    if self.teacher_answer is None:
      return None
    return answers_lib.answers_match(self.teacher_answer, self.answer, self.answer_type,
                                     self.choices)

  def to_json(self) -> dict[str, Any]:
    """The JSON object of this record (levels as string keys, sorted)."""
    return {
        "id": self.id, "community": self.community, "split": self.split,
        "question": self.question,
        "choices": list(self.choices) if self.choices is not None else None,
        "answer": self.answer, "answer_type": self.answer_type,
        "rationales": {str(k): self.rationales[k] for k in sorted(self.rationales)},
        "teacher": self.teacher, "teacher_answer": self.teacher_answer,
        "provenance": dict(self.provenance),
    }

  @classmethod
  def from_json(cls, obj: Any) -> "TraceRecord":
    """Builds a record from its JSON object; raises io_lib.FieldError naming the field."""
    obj = io_lib.check_fields(obj, cls)
    rationales = obj["rationales"]
    if not isinstance(rationales, dict):
      raise io_lib.FieldError("rationales", "expected an object {level: text}")
    levels = {}
    for key, text in rationales.items():
      if key not in _LEVEL_KEYS:
        raise io_lib.FieldError("rationales", f"unknown level {key!r}: expected one of the keys "
                                f"{', '.join(repr(k) for k in _LEVEL_KEYS)}")
      levels[_LEVEL_KEYS[key]] = text
    choices = obj.get("choices")
    if choices is not None and not isinstance(choices, list):
      raise io_lib.FieldError("choices", "expected a list of strings or null")
    if "provenance" in obj and not isinstance(obj["provenance"], dict):
      raise io_lib.FieldError("provenance", "expected an object")
    return cls(**dict(obj, rationales=levels,
                      choices=tuple(choices) if choices is not None else None))


def validate_record(record: TraceRecord) -> None:
  """Raises io_lib.FieldError for the first field that breaks the schema."""
  for field in ("id", "question", "answer", "teacher"):
    io_lib.require_str(field, getattr(record, field))
  io_lib.check("community", names.validate_name, record.community)
  io_lib.require_one_of("split", record.split, SPLITS)
  io_lib.require_one_of("answer_type", record.answer_type, answers_lib.ANSWER_TYPES)
  for level, text in record.rationales.items():
    if isinstance(level, bool) or level not in names.LEVELS:
      raise io_lib.FieldError("rationales", f"unknown level {level!r}: expected 1..6")
    if not isinstance(text, str) or not text.strip():
      raise io_lib.FieldError("rationales", f"level {level} is empty or not a string")
  if record.answer_type == "choice":
    if not record.choices or not all(isinstance(c, str) and c.strip() for c in record.choices):
      raise io_lib.FieldError("choices",
                              "a 'choice' question needs a non-empty list of non-empty strings")
    # Choices that differ only in case or surrounding spaces make the gold answer ambiguous
    # (a letter answer and a text answer can name different entries): refused. An exact
    # repeat names one answer and occurs in published CommonsenseQA (146 questions), so it
    # is accepted and counted (ReadReport.repeated_choices).
    folded = [c.strip().casefold() for c in record.choices]
    variants = [c for i, c in enumerate(record.choices)
                if folded[i] in folded[:i] and c not in record.choices[:i]]
    if variants:
      raise io_lib.FieldError("choices", f"duplicate choice {variants[0]!r} in "
                              f"{list(record.choices)} (choices must differ ignoring case and "
                              "spaces)")
    if record.answer not in record.choices:
      raise io_lib.FieldError("answer",
                              f"{record.answer!r} is not among choices {list(record.choices)}")
  elif record.choices is not None:
    raise io_lib.FieldError("choices",
                            f"only 'choice' questions have choices, not {record.answer_type!r}")
  if answers_lib.normalize_answer(record.answer, record.answer_type, record.choices) is None:
    raise io_lib.FieldError("answer",
                            f"{record.answer!r} is not a valid {record.answer_type} answer")
  io_lib.require_str("teacher_answer", record.teacher_answer, allow_empty=True, optional=True)
  provenance = record.provenance
  if not isinstance(provenance, Mapping):
    raise io_lib.FieldError("provenance", "expected an object")
  for key in ("source", "license"):
    if not isinstance(provenance.get(key), str) or not provenance[key]:
      raise io_lib.FieldError("provenance", f"missing '{key}'")


@dataclasses.dataclass(frozen=True)
class CommunityManifest:
  """What a community directory holds.

  Attributes:
    name: the community (an identifier; used in task names).
    description: a sentence for people.
    answer_type: the answer type of all its questions.
    splits: split -> JSON Lines file, relative to the manifest's directory.
    license: the license of the traces.
    levels: the rationale levels its records carry.
    teacher: who wrote the rationales.
  """
  name: str
  description: str
  answer_type: str
  splits: Mapping[str, str]
  license: str
  levels: tuple[int, ...] = names.LEVELS
  teacher: str = "unknown"

  def __post_init__(self):
    names.validate_name(self.name)
    answers_lib.check_answer_type(self.answer_type)
    if not isinstance(self.splits, Mapping):
      raise ValueError(f"field 'splits': expected an object {{split: file}}, got "
                       f"{type(self.splits).__name__}")
    for split, filename in self.splits.items():
      if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
      if not isinstance(filename, str):
        raise ValueError(f"field 'splits.{split}': expected a file name, got {filename!r}")
      path = Path(filename)
      if (path.is_absolute() or ".." in path.parts or not path.parts
          or filename.endswith(("/", "/."))):
        raise ValueError(f"split file {filename!r} must be a relative path inside the community "
                         "directory, naming a file")
    for level in self.levels:
      names.validate_level(level)
    if len(set(self.levels)) != len(self.levels):
      raise ValueError(f"field 'levels': duplicate level in {list(self.levels)}")

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "description": self.description,
            "answer_type": self.answer_type, "splits": dict(self.splits),
            "license": self.license, "levels": list(self.levels), "teacher": self.teacher}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "CommunityManifest":
    """Builds a manifest from its JSON object; raises ValueError naming the field."""
    if not isinstance(obj, Mapping):
      raise ValueError(f"expected a JSON object, got {io_lib.json_type(obj)}")
    levels = obj.get("levels", names.LEVELS)
    if not isinstance(levels, (list, tuple)):
      raise ValueError(f"field 'levels': expected a list of levels, got {io_lib.json_type(levels)}")
    return cls(**dict(obj, levels=tuple(levels)))
