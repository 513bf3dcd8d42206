"""Per-example outcomes of a sweep's runs: what paired analyses read.

Each run directory holds ``examples.jsonl`` next to ``result.json``, one line
per (community, test example) the run was evaluated on::

  {"community": "strategy", "id": "strategy-test-00007", "correct": true,
   "answer": "no", "majority_correct": true, "teacher_correct": false, "chance": 0.5}

``answer`` is the student's parsed answer (null when unparseable);
``majority_correct`` scores the train split's majority class on this example
(:class:`MajorityClass`: the most common answer, or for multiple choice the
most common position of the answer among the choices); ``teacher_correct``
is the record's teacher answer scored against gold (null when the records carry no teacher answer); ``chance`` is the
probability of a uniform guess (0.5 yes/no, 1/choices, 0 free text/numbers).
The sweep gathers every run's lines, with a ``run`` field, into its own
``examples.jsonl`` (so a committed sweep keeps them without run directories).
Readers validate every line; errors name the file, line and field.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cdc_jax import answers as answers_lib
from cdc_jax import io as io_lib
from cdc_jax.coalitions.results import EXAMPLES_FILENAME, ResultError, RunResult
from cdc_jax.data import records


@dataclasses.dataclass(frozen=True)
class ExampleOutcome:
  """One test example of one run: the student's outcome and the baselines'."""
  community: str
  id: str
  correct: bool
  answer: str | None = None
  majority_correct: bool | None = None
  teacher_correct: bool | None = None
  chance: float | None = None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


_CHECKS = {
    "community": lambda v: isinstance(v, str) and bool(v),
    "id": lambda v: isinstance(v, str) and bool(v),
    "correct": lambda v: isinstance(v, bool),
    "answer": lambda v: v is None or isinstance(v, str),
    "majority_correct": lambda v: v is None or isinstance(v, bool),
    "teacher_correct": lambda v: v is None or isinstance(v, bool),
    "chance": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and 0 <= v <= 1),
}


def _parse(obj: Any, *, with_run: bool) -> tuple[str | None, ExampleOutcome]:
  """One line's run (None without one) and outcome; raises io_lib.FieldError."""
  run = obj.get("run") if isinstance(obj, dict) else None
  if with_run:
    io_lib.require_str("run", run)
  fields = io_lib.check_fields(
      {k: v for k, v in obj.items() if k != "run"} if isinstance(obj, dict) else obj,
      ExampleOutcome)
  for name, value in fields.items():
    if not _CHECKS[name](value):
      raise io_lib.FieldError(name, f"invalid value {value!r}")
  return run, ExampleOutcome(**fields)


def read_examples(path: str | os.PathLike) -> dict[str | None, list[ExampleOutcome]]:
  """Reads an ``examples.jsonl`` (a run's, or a sweep's with ``run`` fields).

  Returns run -> outcomes (key None for a run's own file). Raises ResultError
  for a bad line or a (run, community, id) that appears twice.
  """
  path = Path(path)
  out: dict[str | None, list[ExampleOutcome]] = collections.defaultdict(list)
  seen: dict[tuple, int] = {}
  with_run = None
  for number, obj in io_lib.iter_json_lines(path, error=ResultError, what="outcome"):
    if with_run is None:
      with_run = isinstance(obj, dict) and "run" in obj
    with io_lib.located(path, number, error=ResultError):
      run, outcome = _parse(obj, with_run=with_run)
    key = (run, outcome.community, outcome.id)
    if key in seen:
      raise ResultError(path, number, "id", f"example {outcome.id!r} of {outcome.community!r} "
                        f"repeats line {seen[key]}")
    seen[key] = number
    out[run].append(outcome)
  return dict(out)


def examples_to_jsonl(outcomes: Iterable[ExampleOutcome], run: str | None = None) -> str:
  return "".join(json.dumps({**({"run": run} if run else {}), **o.to_json()}, sort_keys=True) + "\n"
                 for o in outcomes)


def write_examples(path: str | os.PathLike, outcomes: Sequence[ExampleOutcome]) -> int:
  """Atomically writes one run's outcomes; returns the count written."""
  io_lib.atomic_write_text(path, examples_to_jsonl(outcomes))
  return len(outcomes)


def majority_answer(train_answers: Sequence[str]) -> str:
  """The most common training answer (ties: the alphabetically first)."""
  if not train_answers:
    raise ValueError("no training answers to take a majority from")
  counts = collections.Counter(train_answers)
  return min(counts, key=lambda a: (-counts[a], a))


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclasses.dataclass(frozen=True)
class MajorityClass:
  """The train split's majority class, as a guess for any test question.

  Multiple-choice questions each list their own options, so the answer *text*
  of one question is almost never an option of another: their majority class
  is the most common *position* of the gold answer among the choices (ties:
  the first position). Other questions take the most common answer text.
  Exactly one of ``answer`` and ``position`` is set.
  """
  answer: str | None = None
  position: int | None = None

  def __post_init__(self):
    if (self.answer is None) == (self.position is None):
      raise ValueError(f"set exactly one of answer and position, got {self}")

  def guess(self, choices: Sequence[str] | None = None) -> str | None:
    """The majority class's answer to a question with ``choices`` (None: no such position)."""
    if self.position is None:
      return self.answer
    choices = choices or ()
    return choices[self.position] if self.position < len(choices) else None

  def correct(self, gold: str, answer_type: str, choices: Sequence[str] | None = None) -> bool:
    """Whether the majority class's guess matches ``gold`` on a question with ``choices``."""
    return answers_lib.answers_match(self.guess(choices), gold, answer_type, choices)

  def describe(self) -> str:
    """The answer text, or 'choice (c)' for a position."""
    if self.position is None:
      return self.answer
    if self.position < len(_LETTERS):
      return f"choice ({_LETTERS[self.position]})"
    return f"choice {self.position + 1}"


def majority_class(train: Sequence[records.TraceRecord]) -> MajorityClass:
  """The majority class of training records (see :class:`MajorityClass`)."""
  if not train:
    raise ValueError("no training answers to take a majority from")
  if not all(r.answer_type == "choice" and r.choices for r in train):
    return MajorityClass(answer=majority_answer([r.answer for r in train]))
  # A TraceRecord's answer is one of its choices (checked when it is built).
  positions = collections.Counter(
      r.choices.index(answers_lib.normalize_answer(r.answer, "choice", r.choices)) for r in train)
  return MajorityClass(position=min(positions, key=lambda p: (-positions[p], p)))


def chance_of(record: records.TraceRecord) -> float:
  """Probability that a uniform guess is right: 0.5 yes/no, 1/choices, else 0."""
  if record.answer_type == "boolean":
    return 0.5
  if record.answer_type == "choice" and record.choices:
    return 1.0 / len(record.choices)
  return 0.0


def outcomes_from_predictions(predictions_path: str | os.PathLike, community: str,
                              test: Sequence[records.TraceRecord],
                              majority: MajorityClass) -> list[ExampleOutcome]:
  """One community's outcomes from evaluate's ``<task>.predictions.jsonl``.

  ``test`` are the community's test records (for the baselines), matched by
  id; a prediction whose id is not among them is an error naming it.
  ``majority`` is the train split's :func:`majority_class`.
  """
  path = Path(predictions_path)
  by_id = {r.id: r for r in test}
  out = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    row = json.loads(line)
    record = by_id.get(row.get("id"))
    if record is None:
      raise ResultError(path, number, "id", f"{row.get('id')!r} is not a test record of "
                        f"{community!r}")
    out.append(ExampleOutcome(
        community=community, id=record.id, correct=bool(row["correct"]),
        answer=None if row.get("parsed_answer") in (None, "") else str(row["parsed_answer"]),
        majority_correct=majority.correct(record.answer, record.answer_type, record.choices),
        teacher_correct=record.teacher_correct, chance=chance_of(record)))
  return out


def collect_examples(sweep_dir: str | os.PathLike,
                     rows: Sequence[RunResult]) -> dict[str, list[ExampleOutcome]]:
  """Outcomes of ``rows``: each run's own file, else the sweep's ``examples.jsonl``.

  Runs without outcomes are left out (older sweeps); callers say so.
  """
  sweep_dir = Path(sweep_dir)
  out, table = {}, None
  for row in rows:
    path = sweep_dir / row.run / EXAMPLES_FILENAME
    if path.exists():
      out[row.run] = read_examples(path).get(None, [])
      continue
    if table is None:
      path = sweep_dir / EXAMPLES_FILENAME
      table = read_examples(path) if path.exists() else {}
    if row.run in table:
      out[row.run] = table[row.run]
  return out


def write_sweep_examples(path: str | os.PathLike,
                         examples: Mapping[str, Sequence[ExampleOutcome]]) -> int:
  """Atomically writes every run's outcomes (with ``run``) into one file; returns lines."""
  text = "".join(examples_to_jsonl(examples[run], run) for run in sorted(examples))
  io_lib.atomic_write_text(path, text)
  return sum(len(v) for v in examples.values())
