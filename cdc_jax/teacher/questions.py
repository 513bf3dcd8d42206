"""The questions a teacher traces: a community's records, read once for launch and verify.

``load_questions`` reads a community directory (or its manifest) or a JSON
Lines file of records; ``add_input_flags`` are the flags that name it, shared
by ``teacher.launch`` and ``teacher.verify``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.teacher import shards


@dataclasses.dataclass(frozen=True)
class Questions:
  """The questions to trace: records (any rationales ignored) of one community."""
  community: str
  answer_type: str
  description: str
  license: str
  records: tuple[records_lib.TraceRecord, ...]
  source: str


def _only(values: set[str], what: str, path: Path) -> str:
  if len(values) != 1:
    raise records_lib.RecordError(path, None, what, f"expected one value in the file, got "
                                                    f"{sorted(values)[:5]}")
  return next(iter(values))


def load_questions(path: str | os.PathLike, *, splits: Sequence[str] | None = None) -> Questions:
  """Reads a community directory / manifest, or a JSON Lines file of records.

  ``splits`` keeps those splits (each must exist); records come in split
  order (train, validation, test), then file order.
  """
  path = Path(path)
  if path.is_dir() or path.name == records_lib.MANIFEST_FILENAME:
    community = records_lib.load_community(path)
    by_split = community.records
    name, answer_type = community.name, community.manifest.answer_type
    description, license_ = community.manifest.description, community.manifest.license
  else:
    recs = records_lib.read_records(path)
    if not recs:
      raise records_lib.RecordError(path, None, None, "no records")
    name = _only({r.community for r in recs}, "community", path)
    answer_type = _only({r.answer_type for r in recs}, "answer_type", path)
    license_ = " AND ".join(sorted({str(r.provenance["license"]) for r in recs}))
    description = f"questions of {path.name}"
    by_split = {}
    for r in recs:
      by_split.setdefault(r.split, []).append(r)
  if splits is not None:
    unknown = [s for s in splits if s not in by_split]
    if unknown:
      raise ValueError(f"{path}: no split(s) {unknown}; it has {sorted(by_split)}")
  chosen = [s for s in records_lib.SPLITS if s in by_split and (splits is None or s in splits)]
  records = tuple(r for s in chosen for r in by_split[s])
  return Questions(community=name, answer_type=answer_type, description=description,
                   license=license_, records=records, source=str(path))


def input_fingerprint(questions: Questions) -> str:
  """A hash of what the teacher sees of each question (ids, splits, text, gold)."""
  return shards.fingerprint([(r.id, r.split, r.question, r.choices, r.answer)
                             for r in questions.records])


def parse_levels(text: str) -> tuple[int, ...]:
  """``'1,6'`` -> ``(1, 6)``; an argparse type."""
  try:
    return tuple(sorted({names.validate_level(int(p)) for p in text.split(",") if p.strip()}))
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"--levels={text!r}: {e}") from None


def _splits(text: str) -> tuple[str, ...]:
  splits = tuple(s.strip() for s in text.split(",") if s.strip())
  bad = [s for s in splits if s not in records_lib.SPLITS]
  if bad or not splits:
    raise argparse.ArgumentTypeError(f"--splits={text!r}: expected some of {records_lib.SPLITS}")
  return splits


def add_input_flags(parser: argparse.ArgumentParser) -> None:
  """The flags that name the input (shared with verify)."""
  parser.add_argument("--input", required=True,
                      help="community directory, its community.json, or a JSON Lines file "
                           "of records")
  parser.add_argument("--splits", type=_splits, default=None, help="e.g. train,test (default all)")
