"""Community trace records: the one format for what a community contributes.

A community lives in a directory: ``community.json`` (the manifest) and one
JSON Lines file per split, one :class:`TraceRecord` a line. Every reader
validates each line and raises :class:`RecordError` naming the file, line and
field; nothing is dropped silently, and :class:`ReadReport` counts what was read.
Sizes are bounded while reading (:class:`ReadLimits`): a line or field over the
limit is refused before it is parsed or kept, so one huge question cannot
exhaust memory downstream.
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
# Level keys are exactly these strings: "06", " 6 " or "+6" would alias level 6
# and one of two such keys would silently replace the other.
_LEVEL_KEYS = {str(level): level for level in names.LEVELS}
LINE_LIMIT_ENV = "CDC_MAX_LINE_BYTES"
FIELD_LIMIT_ENV = "CDC_MAX_FIELD_BYTES"


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
      if key not in _LEVEL_KEYS:
        raise _FieldError("rationales", f"unknown level {key!r}: expected one of the keys "
                          f"{', '.join(repr(k) for k in _LEVEL_KEYS)}")
      levels[_LEVEL_KEYS[key]] = text
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
    # Choices that differ only in case or surrounding spaces make the gold answer ambiguous
    # (a letter answer and a text answer can name different entries): refused. An exact
    # repeat names one answer and occurs in published CommonsenseQA (146 questions), so it
    # is accepted and counted (ReadReport.repeated_choices).
    folded = [c.strip().casefold() for c in record.choices]
    variants = [c for i, c in enumerate(record.choices)
                if folded[i] in folded[:i] and c not in record.choices[:i]]
    if variants:
      raise _FieldError("choices", f"duplicate choice {variants[0]!r} in "
                        f"{list(record.choices)} (choices must differ ignoring case and spaces)")
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
      raise ValueError(f"expected a JSON object, got {_json_type(obj)}")
    levels = obj.get("levels", names.LEVELS)
    if not isinstance(levels, (list, tuple)):
      raise ValueError(f"field 'levels': expected a list of levels, got {_json_type(levels)}")
    return cls(**dict(obj, levels=tuple(levels)))


def _json_type(value: Any) -> str:
  return {dict: "an object", list: "a list", str: "a string", type(None): "null",
          bool: "a boolean"}.get(type(value), type(value).__name__)


def read_manifest(path: str | os.PathLike) -> CommunityManifest:
  """Reads ``community.json`` (or the directory holding it)."""
  path = Path(path)
  if path.is_dir():
    path = path / MANIFEST_FILENAME
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise RecordError(path, None, None, "no community manifest here") from None
  except IsADirectoryError:
    raise RecordError(path, None, None, "is a directory, expected a community.json file") from None
  try:
    obj = json.loads(_decode_utf8(path, data, 1))
  except json.JSONDecodeError as e:
    raise RecordError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None
  try:
    return CommunityManifest.from_json(obj)
  except (TypeError, ValueError) as e:
    raise RecordError(path, None, None, f"invalid manifest: {e}") from None


def _decode_utf8(path: Path, data: bytes, first_line: int) -> str:
  """``data`` as text; a RecordError names the line and column of a non-UTF-8 byte."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = first_line + data.count(b"\n", 0, e.start)
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    raise RecordError(path, line, None, f"not UTF-8: byte 0x{data[e.start]:02x} at column "
                      f"{column}") from None


# ---------------------------------------------------------------------------
# Reading and writing.


@dataclasses.dataclass
class ReadReport:
  """Counts of what a reader read: records per split and rationales per level."""
  community: str
  records: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  levels: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)
  teacher_correct: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  repeated_choices: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def add(self, record: TraceRecord) -> None:
    self.records[record.split] += 1
    if record.choices is not None and len(set(record.choices)) < len(record.choices):
      self.repeated_choices[record.split] += 1
    per_level = self.levels.setdefault(record.split, collections.Counter())
    per_level.update(record.rationales.keys())
    if record.teacher_correct is not None:
      self.teacher_correct[record.split] += int(record.teacher_correct)

  def __str__(self) -> str:
    lines = [f"community {self.community}: {sum(self.records.values())} records"]
    for split in sorted(self.records, key=SPLITS.index):
      levels = " ".join(f"L{k}={v}" for k, v in sorted(self.levels[split].items()))
      lines.append(f"  {split}: {self.records[split]} records; rationales {levels}"
                   + (f"; {self.repeated_choices[split]} repeat a choice"
                      if self.repeated_choices[split] else ""))
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ReadLimits:
  """Size limits (UTF-8 bytes) checked while reading records.

  The defaults are far above any real dataset's (the longest CoT of the
  published sets is a few KB); they bound what one bad file can cost.
  ``$CDC_MAX_LINE_BYTES`` / ``$CDC_MAX_FIELD_BYTES`` override them
  (:meth:`from_env`, the readers' default).
  """
  max_line_bytes: int = 4 << 20
  max_field_bytes: int = 1 << 20

  def __post_init__(self):
    for field in ("max_line_bytes", "max_field_bytes"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ReadLimits.{field} must be a positive integer, got {value!r}")

  @classmethod
  def from_env(cls) -> "ReadLimits":
    """The defaults, overridden by ``$CDC_MAX_LINE_BYTES`` / ``$CDC_MAX_FIELD_BYTES``."""
    kwargs = {}
    for field, env in (("max_line_bytes", LINE_LIMIT_ENV), ("max_field_bytes", FIELD_LIMIT_ENV)):
      value = os.environ.get(env)
      if value:
        try:
          kwargs[field] = int(value)
        except ValueError:
          raise ValueError(f"${env}={value!r}: expected a number of bytes") from None
    return cls(**kwargs)


def _check_field_sizes(obj: Any, limit: int, field: str | None = None) -> None:
  """Raises _FieldError for the first string (at any depth) longer than ``limit`` bytes."""
  if isinstance(obj, str):
    # A str of n characters has at most 4n UTF-8 bytes: encode only near the limit.
    if 4 * len(obj) > limit and len(obj.encode("utf-8")) > limit:
      raise _FieldError(field, f"{len(obj.encode('utf-8'))} bytes, over the limit of {limit} "
                        f"(ReadLimits.max_field_bytes, ${FIELD_LIMIT_ENV})")
  elif isinstance(obj, dict):
    for key, value in obj.items():
      _check_field_sizes(value, limit, key if field is None else f"{field}.{key}")
  elif isinstance(obj, list):
    for value in obj:
      _check_field_sizes(value, limit, field)


def iter_records(path: str | os.PathLike, *,
                 limits: ReadLimits | None = None) -> Iterator[tuple[int, TraceRecord]]:
  """Yields ``(line_number, record)`` of a JSON Lines file, validating each line.

  A line over ``limits.max_line_bytes`` is refused after reading at most that
  many bytes of it; any string field over ``limits.max_field_bytes`` is refused.
  """
  path = Path(path)
  limits = limits or ReadLimits.from_env()
  try:
    handle = path.open("rb")
  except FileNotFoundError:
    raise RecordError(path, None, None, "file not found") from None
  except IsADirectoryError:
    raise RecordError(path, None, None, "is a directory, expected a JSON Lines file") from None
  with handle:
    number = 0
    while raw := handle.readline(limits.max_line_bytes + 1):
      number += 1
      if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
        raise RecordError(path, number, None, f"line longer than {limits.max_line_bytes} bytes "
                          f"(ReadLimits.max_line_bytes, ${LINE_LIMIT_ENV})")
      line = _decode_utf8(path, raw, number)
      if not line.strip():
        raise RecordError(path, number, None, "empty line (one record a line, no blank lines)")
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise RecordError(path, number, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
      try:
        _check_field_sizes(obj, limits.max_field_bytes)
        yield number, TraceRecord.from_json(obj)
      except _FieldError as e:
        raise RecordError(path, number, e.field, e.message) from None
      except TypeError as e:  # Wrong field types that dataclass construction rejects.
        raise RecordError(path, number, None, str(e)) from None


def read_records(path: str | os.PathLike, *, community: str | None = None,
                 split: str | None = None, answer_type: str | None = None,
                 levels: Sequence[int] | None = None, report: ReadReport | None = None,
                 seen_ids: set[str] | None = None,
                 limits: ReadLimits | None = None) -> list[TraceRecord]:
  """Reads and validates a JSON Lines file of records.

  Optional ``community``/``split``/``answer_type`` are checked against every
  record, and every rationale level against ``levels``; ids must be unique
  (across files too when ``seen_ids`` is shared).
  """
  seen = set() if seen_ids is None else seen_ids
  out = []
  for number, record in iter_records(path, limits=limits):
    for field, expected in (("community", community), ("split", split),
                            ("answer_type", answer_type)):
      if expected is not None and getattr(record, field) != expected:
        raise RecordError(path, number, field,
                          f"{getattr(record, field)!r} but the manifest says {expected!r}")
    if levels is not None:
      extra = sorted(set(record.rationales) - set(levels))
      if extra:
        raise RecordError(path, number, "rationales", f"level {extra[0]} is not among the "
                          f"manifest's levels {list(levels)}")
    if record.id in seen:
      raise RecordError(path, number, "id", f"duplicate id {record.id!r}")
    seen.add(record.id)
    if report is not None:
      report.add(record)
    out.append(record)
  return out


def split_file(directory: str | os.PathLike, filename: str) -> Path:
  """The split file ``filename`` of a community directory, refusing one outside it.

  A symlink (of the file or a directory on its way) that resolves outside the
  community directory is refused: a community holds only its own files.
  """
  directory = Path(directory)
  path = directory / filename
  resolved, root = path.resolve(), directory.resolve()
  if not resolved.is_relative_to(root):
    raise RecordError(path, None, None, f"resolves to {resolved}, outside the community "
                      f"directory {root} (a symlink leaving it?)")
  return path


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


def load_community(path: str | os.PathLike, *, limits: ReadLimits | None = None) -> Community:
  """Reads a community directory (or its manifest path), validating everything."""
  path = Path(path)
  manifest_path = path / MANIFEST_FILENAME if path.is_dir() else path
  manifest = read_manifest(manifest_path)
  directory = manifest_path.parent
  report = ReadReport(manifest.name)
  seen: set[str] = set()
  records = {}
  for split, filename in manifest.splits.items():
    records[split] = read_records(split_file(directory, filename), community=manifest.name,
                                  split=split, answer_type=manifest.answer_type,
                                  levels=manifest.levels, report=report, seen_ids=seen,
                                  limits=limits)
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
      if not set(r.rationales) <= set(manifest.levels):
        raise ValueError(f"record {r.id!r} has rationale levels {sorted(r.rationales)} but the "
                         f"manifest of {manifest.name} lists only {list(manifest.levels)}")
      seen.add(r.id)
    write_records(directory / manifest.splits[split], recs)
  manifest_path = directory / MANIFEST_FILENAME
  atomic_write_text(manifest_path, json.dumps(manifest.to_json(), indent=2) + "\n")
  return manifest_path
