r"""The ``heuristic`` selection policy's score: the student's fit rank and the teacher's confidence.

    score(r) = w * L(r) + (1 - w) * U(r)          (w = ``weight``, default 0.5)

**L**: the student's reward for r (e.g. the mean per-token log-likelihood of
its training target) as its rank within the community scaled to [0, 1] (1 =
the best fit; ties share a rank), so it is on U's scale whatever the values.
**U**: the teacher's confidence, the mean of the components that are known:
``correct`` (1 if ``teacher_answer`` matches the gold answer, 0 if not) and
``agreement`` (the fraction of r's rationale levels that support the gold
answer: for numbers the rationale's last number equals it, for text and
choices the normalised answer occurs in it; boolean rationales do not state
an answer and are not counted); U = 0.5 when neither is known.

It prefers traces the student already fits; the LaDa-style alternative is
:mod:`cdc_jax.contribution.allocation`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from cdc_jax import answers as answers_lib
from cdc_jax.contribution.rewards import Reward
from cdc_jax.data import records as records_lib


def teacher_correct(record: records_lib.TraceRecord) -> float | None:
  """1.0 / 0.0 if the teacher's answer is known to be right / wrong, else None."""
  correct = record.teacher_correct
  return None if correct is None else float(correct)


def _supports(rationale: str, record: records_lib.TraceRecord) -> bool | None:
  if record.answer_type == "boolean":
    return None
  if record.answer_type == "number":
    stated = answers_lib.extract_answer(rationale, "number")
    return answers_lib.answers_match(stated, record.answer, "number")
  answer = answers_lib.normalize_text(record.answer)
  return bool(answer) and f" {answer} " in f" {answers_lib.normalize_text(rationale)} "


def level_agreement(record: records_lib.TraceRecord) -> float | None:
  """Fraction of rationale levels supporting the gold answer (None if none can tell)."""
  votes = [_supports(text, record) for _, text in sorted(record.rationales.items())]
  votes = [v for v in votes if v is not None]
  return sum(votes) / len(votes) if votes else None


def usefulness(record: records_lib.TraceRecord) -> float:
  """Teacher confidence U in [0, 1]: mean of the known components (0.5 if none)."""
  parts = [p for p in (teacher_correct(record), level_agreement(record)) if p is not None]
  return sum(parts) / len(parts) if parts else 0.5


def rank_scale(values: Sequence[float]) -> list[float]:
  """Ranks scaled to [0, 1] (largest value -> 1; ties share their mean rank; one value -> 1)."""
  values = np.asarray(values, np.float64)
  if not np.all(np.isfinite(values)):
    raise ValueError("learnability values must be finite")
  if len(values) <= 1:
    return [1.0] * len(values)
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values))
  ranks[order] = np.arange(len(values))
  for value in np.unique(values):  # Mean rank for ties.
    tied = values == value
    ranks[tied] = ranks[tied].mean()
  return (ranks / (len(values) - 1)).tolist()


@dataclasses.dataclass(frozen=True)
class TraceScore:
  """One trace's contribution score and its parts."""
  id: str
  learnability: float
  learnability_rank: float
  usefulness: float
  score: float


def score_traces(records: Sequence[records_lib.TraceRecord], *, learnability: Reward,
                 weight: float = 0.5) -> list[TraceScore]:
  """``score = weight * rank(learnability) + (1 - weight) * usefulness`` per record."""
  if not 0 <= weight <= 1:
    raise ValueError(f"weight must be in [0, 1], got {weight}")
  values = [float(v) for v in learnability(records)]
  if len(values) != len(records):
    raise ValueError(f"learnability returned {len(values)} values for {len(records)} records")
  ranks = rank_scale(values)
  out = []
  for record, value, rank in zip(records, values, ranks):
    u = usefulness(record)
    out.append(TraceScore(record.id, value, rank, u, weight * rank + (1 - weight) * u))
  return out
