"""Community directories on disk: validated JSON Lines reading, atomic writing.

A community lives in a directory: ``community.json`` (the manifest) and one
JSON Lines file per split, one :class:`TraceRecord` a line (the schema is
:mod:`cdc_jax.data.trace_record`). Every reader validates each line and raises
:class:`RecordError` naming the file, line and field; nothing is dropped
silently, and :class:`ReadReport` counts what was read. Sizes are bounded while
reading (:class:`ReadLimits`): a line or field over the limit is refused before
it is parsed or kept, so one huge question cannot exhaust memory downstream.
Writes are atomic (:mod:`cdc_jax.io`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax.data import trace_record

# The schema, re-exported: readers and writers of this format name one module.
TraceRecord = trace_record.TraceRecord
CommunityManifest = trace_record.CommunityManifest
RecordError = trace_record.RecordError
SPLITS = trace_record.SPLITS
validate_record = trace_record.validate_record

MANIFEST_FILENAME = "community.json"
LINE_LIMIT_ENV = "CDC_MAX_LINE_BYTES"
FIELD_LIMIT_ENV = "CDC_MAX_FIELD_BYTES"


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
    obj = json.loads(io_lib.decode_utf8(path, data, 1, error=RecordError))
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
  """Raises io_lib.FieldError for the first string (at any depth) over ``limit`` bytes."""
  if isinstance(obj, str):
    # A str of n characters has at most 4n UTF-8 bytes: encode only near the limit.
    if 4 * len(obj) > limit and len(obj.encode("utf-8")) > limit:
      raise io_lib.FieldError(field, f"{len(obj.encode('utf-8'))} bytes, over the limit of "
                              f"{limit} (ReadLimits.max_field_bytes, ${FIELD_LIMIT_ENV})")
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
  limits = limits or ReadLimits.from_env()
  for number, obj in io_lib.iter_json_lines(
      path, error=RecordError, what="record", max_line_bytes=limits.max_line_bytes,
      limit_name=f"ReadLimits.max_line_bytes, ${LINE_LIMIT_ENV}"):
    with io_lib.located(path, number, error=RecordError):
      _check_field_sizes(obj, limits.max_field_bytes)
      record = TraceRecord.from_json(obj)
    yield number, record


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


def records_to_jsonl(records: Iterable[TraceRecord]) -> str:
  return "".join(json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True) + "\n"
                 for r in records)


def write_records(path: str | os.PathLike, records: Iterable[TraceRecord]) -> int:
  """Atomically writes records as JSON Lines; returns the count written."""
  records = list(records)
  io_lib.atomic_write_text(path, records_to_jsonl(records))
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
  io_lib.atomic_write_text(manifest_path, json.dumps(manifest.to_json(), indent=2) + "\n")
  return manifest_path
