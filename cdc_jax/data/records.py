"""Community trace records: the one format for what a community contributes.

A community lives in a directory: ``community.json`` (the manifest) and one
JSON Lines file per split, one :class:`TraceRecord` a line. Every reader
validates each line and raises :class:`RecordError` naming the file, line and
field; nothing is dropped silently, and :class:`ReadReport` counts what was read.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import names

MANIFEST_FILENAME = "community.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
SPLITS = ("train", "validation", "test")


class RecordError(ValueError):
  """A record or manifest that does not follow the schema."""

  def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str):
    self.path, self.line, self.field = str(path), line, field
    where = self.path if line is None else f"{self.path}:{line}"
    what = f"field '{field}': " if field else ""
    super().__init__(f"{where}: {what}{message}")


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
    """Builds a record from its JSON object; raises _FieldError naming the field."""
    if not isinstance(obj, dict):
      raise _FieldError(None, f"expected a JSON object, got {type(obj).__name__}")
    required = ("id", "community", "split", "question", "answer", "answer_type", "rationales")
    for key in required:
      if key not in obj:
        raise _FieldError(key, "missing")
    unknown = set(obj) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise _FieldError(sorted(unknown)[0], "unknown field")
    rationales = obj["rationales"]
    if not isinstance(rationales, dict):
      raise _FieldError("rationales", "expected an object {level: text}")
    levels = {}
    for key, text in rationales.items():
      try:
        level = int(key)
      except (TypeError, ValueError):
        raise _FieldError("rationales", f"unknown level {key!r}: expected 1..6") from None
      levels[level] = text
    choices = obj.get("choices")
    if choices is not None and not isinstance(choices, list):
      raise _FieldError("choices", "expected a list of strings or null")
    kwargs = dict(obj, rationales=levels,
                  choices=tuple(choices) if choices is not None else None)
    if "provenance" in obj and not isinstance(obj["provenance"], dict):
      raise _FieldError("provenance", "expected an object")
    return cls(**kwargs)


class _FieldError(ValueError):
  """A schema error in one field; readers add the file and line."""

  def __init__(self, field: str | None, message: str):
    self.field, self.message = field, message
    super().__init__(f"field '{field}': {message}" if field else message)


def _require_str(record: TraceRecord, field: str, *, allow_empty: bool = False) -> str:
  value = getattr(record, field)
  if not isinstance(value, str):
    raise _FieldError(field, f"expected a string, got {type(value).__name__}")
  if not allow_empty and not value.strip():
    raise _FieldError(field, "empty")
  return value


def validate_record(record: TraceRecord) -> None:
  """Raises _FieldError for the first field that breaks the schema."""
  for field in ("id", "question", "answer", "teacher"):
    _require_str(record, field)
  try:
    names.validate_name(record.community)
  except ValueError as e:
    raise _FieldError("community", str(e)) from None
  if record.split not in SPLITS:
    raise _FieldError("split", f"{record.split!r} is not one of {SPLITS}")
  if record.answer_type not in answers_lib.ANSWER_TYPES:
    raise _FieldError("answer_type",
                      f"{record.answer_type!r} is not one of {answers_lib.ANSWER_TYPES}")
  for level, text in record.rationales.items():
    if isinstance(level, bool) or level not in names.LEVELS:
      raise _FieldError("rationales", f"unknown level {level!r}: expected 1..6")
    if not isinstance(text, str) or not text.strip():
      raise _FieldError("rationales", f"level {level} is empty or not a string")
  if record.answer_type == "choice":
    if not record.choices or not all(isinstance(c, str) and c.strip() for c in record.choices):
      raise _FieldError("choices", "a 'choice' question needs a non-empty list of non-empty strings")
    if record.answer not in record.choices:
      raise _FieldError("answer", f"{record.answer!r} is not among choices {list(record.choices)}")
  elif record.choices is not None:
    raise _FieldError("choices", f"only 'choice' questions have choices, not {record.answer_type!r}")
  if answers_lib.normalize_answer(record.answer, record.answer_type, record.choices) is None:
    raise _FieldError("answer", f"{record.answer!r} is not a valid {record.answer_type} answer")
  if record.teacher_answer is not None and not isinstance(record.teacher_answer, str):
    raise _FieldError("teacher_answer", "expected a string or null")
  provenance = record.provenance
  if not isinstance(provenance, Mapping):
    raise _FieldError("provenance", "expected an object")
  for key in ("source", "license"):
    if not isinstance(provenance.get(key), str) or not provenance[key]:
      raise _FieldError("provenance", f"missing '{key}'")


# ---------------------------------------------------------------------------
# Manifest.


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
    for split, filename in self.splits.items():
      if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
      path = Path(filename)
      if path.is_absolute() or ".." in path.parts or not filename:
        raise ValueError(f"split file {filename!r} must be a relative path inside the community directory")
    for level in self.levels:
      names.validate_level(level)

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "description": self.description,
            "answer_type": self.answer_type, "splits": dict(self.splits),
            "license": self.license, "levels": list(self.levels), "teacher": self.teacher}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "CommunityManifest":
    return cls(**dict(obj, levels=tuple(obj.get("levels", names.LEVELS))))


def read_manifest(path: str | os.PathLike) -> CommunityManifest:
  """Reads ``community.json`` (or the directory holding it)."""
  path = Path(path)
  if path.is_dir():
    path = path / MANIFEST_FILENAME
  try:
    obj = json.loads(path.read_text())
  except FileNotFoundError:
    raise RecordError(path, None, None, "no community manifest here") from None
  except json.JSONDecodeError as e:
    raise RecordError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None
  try:
    return CommunityManifest.from_json(obj)
  except (TypeError, ValueError) as e:
    raise RecordError(path, None, None, f"invalid manifest: {e}") from None


# ---------------------------------------------------------------------------
# Reading and writing.


@dataclasses.dataclass
class ReadReport:
  """Counts of what a reader read: records per split and rationales per level."""
  community: str
  records: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  levels: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
  teacher_correct: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def add(self, record: TraceRecord) -> None:
    self.records[record.split] += 1
    per_level = self.levels.setdefault(record.split, collections.Counter())
    per_level.update(record.rationales.keys())
    if record.teacher_correct is not None:
      self.teacher_correct[record.split] += int(record.teacher_correct)

  def __str__(self) -> str:
    lines = [f"community {self.community}: {sum(self.records.values())} records"]
    for split in sorted(self.records, key=SPLITS.index):
      levels = " ".join(f"L{k}={v}" for k, v in sorted(self.levels[split].items()))
      lines.append(f"  {split}: {self.records[split]} records; rationales {levels}")
    return "\n".join(lines)


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, TraceRecord]]:
  """Yields ``(line_number, record)`` of a JSON Lines file, validating each line."""
  path = Path(path)
  try:
    handle = path.open(encoding="utf-8")
  except FileNotFoundError:
    raise RecordError(path, None, None, "file not found") from None
  with handle:
    for number, line in enumerate(handle, start=1):
      if not line.strip():
        raise RecordError(path, number, None, "empty line (one record a line, no blank lines)")
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise RecordError(path, number, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
      try:
        yield number, TraceRecord.from_json(obj)
      except _FieldError as e:
        raise RecordError(path, number, e.field, e.message) from None
      except TypeError as e:  # Wrong field types that dataclass construction rejects.
        raise RecordError(path, number, None, str(e)) from None


def read_records(path: str | os.PathLike, *, community: str | None = None,
                 split: str | None = None, answer_type: str | None = None,
                 report: ReadReport | None = None,
                 seen_ids: set[str] | None = None) -> list[TraceRecord]:
  """Reads and validates a JSON Lines file of records.

  Optional ``community``/``split``/``answer_type`` are checked against every
  record; ids must be unique (across files too when ``seen_ids`` is shared).
  """
  seen = set() if seen_ids is None else seen_ids
  out = []
  for number, record in iter_records(path):
    for field, expected in (("community", community), ("split", split),
                            ("answer_type", answer_type)):
      if expected is not None and getattr(record, field) != expected:
        raise RecordError(path, number, field,
                          f"{getattr(record, field)!r} but the manifest says {expected!r}")
    if record.id in seen:
      raise RecordError(path, number, "id", f"duplicate id {record.id!r}")
    seen.add(record.id)
    if report is not None:
      report.add(record)
    out.append(record)
  return out


@dataclasses.dataclass(frozen=True)
class Community:
  """A community read from disk: its manifest, records per split and counts."""
  manifest: CommunityManifest
  directory: Path
  records: Mapping[str, Sequence[TraceRecord]]
  report: ReadReport

  @property
  def name(self) -> str:
    return self.manifest.name


def load_community(path: str | os.PathLike) -> Community:
  """Reads a community directory (or its manifest path), validating everything."""
  path = Path(path)
  manifest_path = path / MANIFEST_FILENAME if path.is_dir() else path
  manifest = read_manifest(manifest_path)
  directory = manifest_path.parent
  report = ReadReport(manifest.name)
  seen: set[str] = set()
  records = {}
  for split, filename in manifest.splits.items():
    records[split] = read_records(directory / filename, community=manifest.name, split=split,
                                  answer_type=manifest.answer_type, report=report, seen_ids=seen)
  return Community(manifest, directory, records, report)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` via a temp file in the same directory + rename.

  Readers never see a partial file: they find the old content or the new.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual mode.
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
  atomic_write_bytes(path, text.encode("utf-8"))


def records_to_jsonl(records: Iterable[TraceRecord]) -> str:
  return "".join(json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True) + "\n"
                 for r in records)


def write_records(path: str | os.PathLike, records: Iterable[TraceRecord]) -> int:
  """Atomically writes records as JSON Lines; returns the count written."""
  records = list(records)
  atomic_write_text(path, records_to_jsonl(records))
  return len(records)


def write_community(directory: str | os.PathLike, manifest: CommunityManifest,
                    records: Mapping[str, Sequence[TraceRecord]]) -> Path:
  """Writes a community directory: one JSON Lines file per split + manifest.

  The manifest is written last, so a directory with a manifest is complete.
  Returns the manifest's path.
  """
  directory = Path(directory)
  if set(records) != set(manifest.splits):
    raise ValueError(f"records for splits {sorted(records)} but the manifest lists "
                     f"{sorted(manifest.splits)}")
  seen: set[str] = set()
  for split, recs in records.items():
    for r in recs:
      if r.community != manifest.name or r.split != split or r.answer_type != manifest.answer_type:
        raise ValueError(f"record {r.id!r} ({r.community}/{r.split}/{r.answer_type}) does not "
                         f"belong in {manifest.name}/{split}/{manifest.answer_type}")
      if r.id in seen:
        raise ValueError(f"duplicate id {r.id!r} in community {manifest.name}")
      seen.add(r.id)
    write_records(directory / manifest.splits[split], recs)
  manifest_path = directory / MANIFEST_FILENAME
  atomic_write_text(manifest_path, json.dumps(manifest.to_json(), indent=2) + "\n")
  return manifest_path
