"""The results table of a coalition sweep: one :class:`RunResult` per run.

A sweep directory holds one sub-directory per run, each with a
``result.json`` (one RunResult object) written when the run finished; the
sweep may also hold a ``results.jsonl`` table (one RunResult a line) that
:func:`write_results` writes atomically. Every reader validates each row and
raises :class:`ResultError` naming the file, line and field.

Example line::

  {"run": "ab-L6-cot_label-s0", "members": ["a", "b"], "level": 6,
   "format": "cot_label", "seed": 0, "proportions": null, "eps": null,
   "selection": null, "accuracy": {"a": 0.61, "b": 0.52, "c": 0.2},
   "num_examples": {"a": 100, "b": 80, "c": 50},
   "train_examples": {"a": 900, "b": 700}, "steps": 2000, "wall_s": 312.5}
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax import names

RESULT_FILENAME = "result.json"
TABLE_FILENAME = "results.jsonl"
EXAMPLES_FILENAME = "examples.jsonl"
_PROPORTION_TOLERANCE = 1e-6
BASELINE_RUNS = (None, "zero_shot")


class ResultError(io_lib.SchemaError):
  """A results row that does not follow the schema (``path:line: field 'f': ...``)."""


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What one training run of a sweep measured.

  Attributes:
    run: the run's id, unique within a sweep.
    members: the coalition's communities (sorted on construction, unique).
    level: rationale granularity level 1..6.
    format: target format (see ``names.FORMATS``).
    seed: the run's random seed.
    proportions: member -> mixing proportion (summing to 1), or None for the
      natural mixture (proportional to the members' data).
    eps: differential-privacy budget of the rationales, None if not private.
    selection: how the training examples were selected, None for all.
    accuracy: community -> accuracy on that community's test split; includes
      every member and may include non-members.
    num_examples: community -> test examples (same keys as ``accuracy``).
    train_examples: member -> training examples contributed.
    steps: training steps.
    wall_s: wall-clock seconds of the run.
    baseline: None for a trained coalition; 'zero_shot' for a run of the
      student before any fine-tuning (0 steps), evaluated like the others.
  """
  run: str
  members: tuple[str, ...]
  level: int
  format: str
  seed: int
  accuracy: Mapping[str, float]
  num_examples: Mapping[str, int]
  train_examples: Mapping[str, int]
  steps: int
  wall_s: float
  proportions: Mapping[str, float] | None = None
  eps: float | None = None
  selection: str | None = None
  baseline: str | None = None

  def __post_init__(self):
    # Normalise containers so equal runs compare equal whatever the writer passed.
    if isinstance(self.members, str) or not isinstance(self.members, Sequence):
      raise io_lib.FieldError("members",
                              f"expected a list of community names, got {self.members!r}")
    object.__setattr__(self, "members", tuple(sorted(self.members)))
    for field in ("accuracy", "num_examples", "train_examples", "proportions"):
      value = getattr(self, field)
      if value is None and field == "proportions":
        continue
      if not isinstance(value, Mapping):
        raise io_lib.FieldError(field, f"expected an object community -> number, got {value!r}")
      object.__setattr__(self, field, dict(sorted(value.items())))
    if isinstance(self.eps, int) and not isinstance(self.eps, bool):
      object.__setattr__(self, "eps", float(self.eps))
    if isinstance(self.wall_s, int) and not isinstance(self.wall_s, bool):
      object.__setattr__(self, "wall_s", float(self.wall_s))
    _validate(self)

  @property
  def coalition(self) -> frozenset[str]:
    """The members as a set."""
    return frozenset(self.members)

  def to_json(self) -> dict[str, Any]:
    """The JSON object of this row."""
    obj = dataclasses.asdict(self)
    obj["members"] = list(self.members)
    return obj

  @classmethod
  def from_json(cls, obj: Any) -> RunResult:
    """Builds a row from a JSON object, raising io_lib.FieldError on schema errors."""
    return cls(**io_lib.check_fields(obj, cls))


def _validate(row: RunResult) -> None:
  """Raises io_lib.FieldError for the first field of ``row`` that breaks the schema."""
  io_lib.require_str("run", row.run)
  if not row.members:
    raise io_lib.FieldError("members", "a coalition needs at least one community")
  for member in row.members:
    io_lib.check("members", names.validate_name, member)
  if len(set(row.members)) != len(row.members):
    raise io_lib.FieldError("members", f"duplicate community in {list(row.members)}")
  io_lib.check("level", names.validate_level, row.level)
  io_lib.check("format", names.validate_format, row.format)
  io_lib.require_int("seed", row.seed)
  members = set(row.members)
  if row.proportions is not None:
    _require_members("proportions", row.proportions, members)
    for community, p in row.proportions.items():
      io_lib.require_number("proportions", p, low=0, high=1, key=community)
    if abs(sum(row.proportions.values()) - 1) > _PROPORTION_TOLERANCE:
      raise io_lib.FieldError("proportions",
                              f"sum to {sum(row.proportions.values())}, expected 1")
  io_lib.require_number("eps", row.eps, low=0, low_open=True, optional=True)
  io_lib.require_str("selection", row.selection, optional=True)
  io_lib.require_one_of("baseline", row.baseline, BASELINE_RUNS)
  for community, value in row.accuracy.items():
    io_lib.check("accuracy", names.validate_name, community)
    io_lib.require_number("accuracy", value, low=0, high=1, key=community)
  missing = sorted(members - set(row.accuracy))
  if missing:
    raise io_lib.FieldError("accuracy", f"members {missing} were not evaluated")
  if set(row.num_examples) != set(row.accuracy):
    raise io_lib.FieldError("num_examples", f"keys {sorted(row.num_examples)} differ from "
                            f"accuracy's {sorted(row.accuracy)}")
  for community, n in row.num_examples.items():
    io_lib.require_int("num_examples", n, low=1, key=community)
  _require_members("train_examples", row.train_examples, members)
  for community, n in row.train_examples.items():
    io_lib.require_int("train_examples", n, low=0, key=community)
  io_lib.require_int("steps", row.steps, low=0)
  io_lib.require_number("wall_s", row.wall_s, low=0)


def _require_members(field: str, mapping: Mapping[str, Any], members: set[str]) -> None:
  if set(mapping) != members:
    raise io_lib.FieldError(field, f"keys {sorted(mapping)} are not the members {sorted(members)}")


def parse_result(obj: Any, *, path: str | os.PathLike = "<object>",
                 line: int | None = None) -> RunResult:
  """Validates one JSON object as a RunResult; errors name ``path:line``."""
  with io_lib.located(path, line, error=ResultError):
    return RunResult.from_json(obj)


def _check_unique(rows: Sequence[RunResult], where: Sequence[tuple[Path, int | None]]) -> None:
  seen: dict[str, tuple[Path, int | None]] = {}
  for row, (path, line) in zip(rows, where):
    if row.run in seen:
      first_path, first_line = seen[row.run]
      first = first_path if first_line is None else f"{first_path}:{first_line}"
      raise ResultError(path, line, "run", f"duplicate run id {row.run!r} (first at {first})")
    seen[row.run] = (path, line)


def read_results(path: str | os.PathLike) -> list[RunResult]:
  """Reads a JSON Lines results table, validating every line; run ids must be unique."""
  path = Path(path)
  rows, where = [], []
  for number, obj in io_lib.iter_json_lines(path, error=ResultError, what="result"):
    rows.append(parse_result(obj, path=path, line=number))
    where.append((path, number))
  _check_unique(rows, where)
  return rows


def results_to_jsonl(rows: Iterable[RunResult]) -> str:
  """The JSON Lines text of ``rows`` (keys sorted, one row a line)."""
  return "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in rows)


def write_results(path: str | os.PathLike, rows: Iterable[RunResult]) -> int:
  """Atomically writes ``rows`` as JSON Lines; returns the count written."""
  rows = list(rows)
  _check_unique(rows, [(Path(path), None)] * len(rows))
  io_lib.atomic_write_text(path, results_to_jsonl(rows))
  return len(rows)


def write_result(run_dir: str | os.PathLike, row: RunResult) -> Path:
  """Atomically writes one run's ``result.json`` into its directory; returns the path."""
  path = Path(run_dir) / RESULT_FILENAME
  io_lib.atomic_write_text(path, json.dumps(row.to_json(), sort_keys=True, indent=1) + "\n")
  return path


def _communities(rows: Sequence[RunResult]) -> list[str]:
  return sorted({c for r in rows for c in r.accuracy})


def write_results_csv(path: str | os.PathLike, rows: Iterable[RunResult]) -> int:
  """Atomically writes ``rows`` as CSV; returns the count written.

  Columns: the scalar fields, ``members`` joined by ``+``, then per community
  ``acc_<c>``, ``test_<c>`` (test examples), ``train_<c>`` and ``prop_<c>``;
  cells are empty where a run has no value.
  """
  rows = list(rows)
  communities = _communities(rows)
  scalar = ["run", "members", "level", "format", "seed", "eps", "selection", "steps", "wall_s"]
  per_community = [("acc", "accuracy"), ("test", "num_examples"), ("train", "train_examples"),
                   ("prop", "proportions")]
  header = scalar + [f"{prefix}_{c}" for prefix, _ in per_community for c in communities]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  for row in rows:
    cells: list[Any] = [row.run, "+".join(row.members), row.level, row.format, row.seed,
                        "" if row.eps is None else row.eps, row.selection or "", row.steps,
                        row.wall_s]
    for _, field in per_community:
      values = getattr(row, field) or {}
      cells.extend(values.get(c, "") for c in communities)
    writer.writerow(cells)
  io_lib.atomic_write_text(path, buffer.getvalue())
  return len(rows)


def collect_results(sweep_dir: str | os.PathLike) -> list[RunResult]:
  """Reads every ``<sweep_dir>/*/result.json`` (sorted by directory) into rows.

  Run directories without a result (unfinished runs) are listed by
  :func:`unfinished_runs`; run ids must be unique across the sweep.
  """
  sweep_dir = Path(sweep_dir)
  if not sweep_dir.is_dir():
    raise ResultError(sweep_dir, None, None, "sweep directory not found")
  rows, where = [], []
  for path in sorted(sweep_dir.glob(f"*/{RESULT_FILENAME}")):
    try:
      obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise ResultError(path, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    rows.append(parse_result(obj, path=path))
    where.append((path, None))
  _check_unique(rows, where)
  return rows


def unfinished_runs(sweep_dir: str | os.PathLike) -> list[Path]:
  """Sub-directories of ``sweep_dir`` without a ``result.json`` (sorted)."""
  return sorted(p for p in Path(sweep_dir).iterdir()
                if p.is_dir() and not p.name.startswith(".") and not (p / RESULT_FILENAME).exists())


def load_sweep(sweep_dir: str | os.PathLike) -> tuple[list[RunResult], Path]:
  """Rows of a sweep: its ``results.jsonl`` if present, else :func:`collect_results`.

  Returns the rows and the path they came from (the table or the directory).
  """
  sweep_dir = Path(sweep_dir)
  table = sweep_dir / TABLE_FILENAME
  if table.exists():
    return read_results(table), table
  return collect_results(sweep_dir), sweep_dir
