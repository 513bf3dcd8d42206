"""Field-mapping importer: CoT data in no known layout, its fields named by the caller.

Reads JSON (an array of objects), JSON Lines or CSV files (by extension, or
``input_format``), and maps named fields to a record: question, answer,
choices, a rationale per level, id and split. A split comes from the file it
is in (``files={'train': 'a.csv', 'test': 'b.csv'}``) or from a field
(``split_field``), whose values may be renamed (``split_values={'dev':
'validation'}``). Field names may be dotted paths into nested JSON objects
(``meta.uid``).

Choices are a JSON list, or text (CSV) holding a JSON list or options joined
by ``choices_separator``; a letter answer ('B') means that choice. Each
rationale is stored without its closing 'The answer is X' sentence, and that
answer is the teacher's (a level whose rationales state none gets no teacher accuracy).
Records are joined and counted by :func:`assembly.assemble` as for the
published formats; provenance (source, license, teacher) comes from the caller.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.data.importers import assembly, detect, sources

INPUT_FORMATS = ("json", "jsonl", "csv")
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def read_csv(path: str | Path) -> list[sources.SourceItem]:
  """Reads a CSV file with a header row: one item (a dict of strings) per row."""
  path = Path(path)
  text = sources._read_text(path)  # pylint: disable=protected-access
  reader = csv.DictReader(io.StringIO(text, newline=""))
  if not reader.fieldnames:
    raise sources.SourceError(path, "empty CSV file (expected a header row)", line=1)
  items = []
  try:
    for row in reader:
      if None in row:  # More cells than header names.
        raise sources.SourceError(path, f"row has {len(reader.fieldnames) + len(row[None])} cells, "
                                  f"the header {len(reader.fieldnames)}", item=len(items),
                                  line=reader.line_num)
      items.append(sources.SourceItem(path, len(items), reader.line_num, row))
  except csv.Error as e:
    raise sources.SourceError(path, f"invalid CSV: {e}", item=len(items),
                              line=reader.line_num) from None
  return items


def read_items(path: str | Path, input_format: str | None = None) -> list[sources.SourceItem]:
  """The items of a JSON, JSON Lines or CSV file (format from the extension unless given)."""
  path = Path(path)
  fmt = input_format or _EXTENSIONS.get(path.suffix.lower())
  if fmt not in INPUT_FORMATS:
    raise sources.SourceError(path, f"cannot tell the file format from {path.suffix!r}: give "
                              f"input_format (one of {INPUT_FORMATS})")
  if fmt == "csv":
    return read_csv(path)
  if fmt == "jsonl":
    return sources.read_json_lines(path)
  return sources.read_json_array(path)


def _value(item: sources.SourceItem, field: str, *, required: bool = True) -> Any:
  """A dotted-path field of an item (None where absent and not required)."""
  value: Any = item.data
  if not isinstance(value, dict):
    raise item.error(f"expected an object, got {type(value).__name__}")
  for part in field.split("."):
    if not isinstance(value, dict) or part not in value or value[part] is None:
      if required:
        raise item.error("missing", field=field)
      return None
    value = value[part]
  return value


def _text(item: sources.SourceItem, field: str, *, required: bool = True) -> str | None:
  value = _value(item, field, required=required)
  if value is None:
    return None
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, (int, float)):
    return answers_lib.format_number(float(value))
  if not isinstance(value, str):
    raise item.error(f"expected text, got {type(value).__name__}", field=field)
  if required and not value.strip():
    raise item.error("empty", field=field)
  return value


def _choices(item: sources.SourceItem, field: str, separator: str) -> tuple[str, ...]:
  value = _value(item, field)
  if isinstance(value, str):
    text = value.strip()
    if text.startswith("["):
      try:
        value = json.loads(text)
      except json.JSONDecodeError as e:
        raise item.error(f"looks like a JSON list but is not: {e.msg}", field=field) from None
    else:
      value = text.split(separator)
  if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
    raise item.error("expected a list of strings (or text joined by "
                     f"{separator!r})", field=field)
  choices = tuple(c.strip() for c in value)
  if len(choices) < 2 or not all(choices):
    raise item.error(f"expected at least two non-empty choices, got {list(choices)}", field=field)
  return choices


def parse_rationale_fields(text: str) -> dict[int, str]:
  """``'6:cot,1:short'`` -> ``{6: 'cot', 1: 'short'}`` (a bare field name means level 6).

  >>> parse_rationale_fields("6:reasoning.long, 1:reasoning.short")
  {6: 'reasoning.long', 1: 'reasoning.short'}
  >>> parse_rationale_fields("why")
  {6: 'why'}
  """
  out: dict[int, str] = {}
  for part in (p.strip() for p in text.split(",") if p.strip()):
    level, sep, field = part.partition(":")
    if not sep:
      level, field = str(names.FULL_COT_LEVEL), part
    try:
      number = names.validate_level(int(level))
    except ValueError:
      raise ValueError(f"rationale field {part!r}: expected LEVEL:FIELD with a level in "
                       f"{names.LEVELS}") from None
    if number in out or not field.strip():
      raise ValueError(f"rationale field {part!r}: level {number} given twice or no field name")
    out[number] = field.strip()
  return out


def import_fields(source_dir: str | Path, *, community: str, files: Mapping[str, str],
                  question_field: str, answer_field: str,
                  rationale_fields: Mapping[int, str] | None = None,
                  choices_field: str | None = None, id_field: str | None = None,
                  split_field: str | None = None, split_values: Mapping[str, str] | None = None,
                  answer_type: str | None = None, choices_separator: str = "|",
                  input_format: str | None = None, teacher: str = "unknown",
                  source: str | None = None,
                  license: str,  # pylint: disable=redefined-builtin
                  description: str | None = None, keep: str = "all",
                  title: str | None = None) -> assembly.ImportedCommunity:
  """Imports files whose fields are named by the caller.

  Args:
    source_dir: the folder of the files (relative file names are inside it).
    community: the community's name.
    files: split -> file; with ``split_field``, any key ('all') may name a
      file whose rows carry their split.
    question_field, answer_field: the question and its gold answer.
    rationale_fields: level -> field of the teacher's rationale at that level.
    choices_field: the options of a multiple-choice question.
    id_field: a stable id (default: a hash of split and question).
    split_field, split_values: each row's split, and renames of its values.
    answer_type: boolean|choice|number|text (default: 'choice' with choices,
      else detected from the gold answers).
    choices_separator: joins options in a CSV cell ('a|b|c').
    input_format: json|jsonl|csv for every file (default: by extension).
    teacher: who wrote the rationales.
    source, license: the records' provenance (source default: the folder).
    description: the manifest's description.
    keep: 'all', or 'correct' to drop rationales whose stated answer is wrong.
    title: what the report calls this import.

  Returns:
    The community, with its import report.
  """
  source_dir = Path(source_dir)
  rationale_fields = dict(rationale_fields or {})
  if not files:
    raise ValueError("no input files: name at least one (files={'train': ...})")
  if not license:
    raise ValueError("give the license of the data (--license)")
  for level in rationale_fields:
    names.validate_level(level)
  assembly.check_keep(keep)
  rows: list[tuple[str, sources.SourceItem]] = []
  for file_split, file in files.items():
    for item in read_items(source_dir / file, input_format):
      if split_field:
        raw = _text(item, split_field)
        split = (split_values or {}).get(raw, raw)
      else:
        split = file_split
      if split not in records_lib.SPLITS:
        where = f"field {split_field!r} is {raw!r}" if split_field else f"file key {split!r}"
        raise item.error(f"{where}: expected a split in {records_lib.SPLITS} (rename values "
                         "with split_values)")
      rows.append((split, item))
  if not rows:
    raise sources.SourceError(source_dir, f"no items in {sorted(files.values())}")
  choices_of = {id(item): _choices(item, choices_field, choices_separator) if choices_field
                else None for _, item in rows}
  detected = answer_type is None
  answer_type = answer_type or detect.detect_answer_type(
      (_text(item, answer_field) for _, item in rows), has_choices=bool(choices_field))
  answers_lib.check_answer_type(answer_type)
  questions, traces = [], []
  for split, item in rows:
    choices = choices_of[id(item)]
    question = _text(item, question_field).strip()
    raw = _text(item, answer_field)
    answer = answers_lib.normalize_answer(raw, answer_type, choices)
    if answer is None:
      raise item.error(f"{raw!r} is not a {answer_type} answer"
                       + (f" among {list(choices)}" if choices else ""), field=answer_field)
    key = assembly.question_key(question, choices)
    record_id = _text(item, id_field).strip() if id_field else assembly.stable_id(key, split)
    questions.append(assembly.GoldQuestion(key=key, id=record_id, split=split, question=question,
                                           answer=answer, choices=choices, item=item))
    for level, field in sorted(rationale_fields.items()):
      text = _text(item, field, required=False)
      if text is None or not text.strip():  # No rationale at this level: counted as absent.
        continue
      traces.append(assembly.LevelTrace(
          key=key, split=split, level=level, rationale=assembly.strip_answer_sentence(text),
          teacher_answer=answers_lib.extract_answer(text, answer_type, choices)
          if detect.states_answer(text) else None, item=item))
  if keep == "correct" and not any(t.teacher_answer is not None for t in traces):
    raise ValueError("keep='correct' needs teacher answers, and no rationale states one "
                     "('The answer is X')")
  source = source or str(source_dir.resolve())
  traced = {split: sorted(rationale_fields) for split in {s for s, _ in rows}}
  imported = assembly.assemble(
      questions, traces, community=community, answer_type=answer_type, teacher=teacher,
      keep=keep, provenance={"source": source, "license": license, "teacher": teacher,
                             "importer": "fields", "files": sorted(files.values())},
      description=description or f"{community}: {answer_type} questions from {source}",
      community_license=license,
      title=title or f"fields/{', '.join(sorted(files.values()))}, teacher {teacher}, keep={keep}",
      traced_levels=traced,
      # Only levels whose rationales state an answer have a teacher accuracy.
      score_teacher={t.level for t in traces if t.teacher_answer is not None})
  if detected:
    imported.report.notes.append(f"answer type {answer_type!r} detected from field "
                                 f"{answer_field!r}")
  return imported
