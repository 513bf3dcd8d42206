r"""LaDa-style allocation: the traces a student can learn but has not learnt yet.

Every trace r gets two *rewards* on one scale, higher = better fit: the
student's s(r) and a reference's t(r) (the teacher, or a stronger model:
e.g. the mean per-token log-likelihood of r's training target under each, or
1/0 correctness). Its **learnability gap** is

    gap(r) = t(r) - s(r)          (t(r) = ``reference_ceiling`` without a reference)

and a :class:`GapBand` puts it in one band, checked in this order:

- ``out_of_reach`` / ``teacher_wrong``: the teacher's answer is known wrong
  (distilling it teaches the wrong answer);
- ``too_easy`` / ``student_fits``: s(r) >= ``student_fit``;
- ``too_easy`` / ``no_gap``: gap <= ``min_gap``;
- ``out_of_reach`` / ``beyond_reach``: gap > ``max_gap``;
- ``learnable`` / ``within_reach``: otherwise.

The learnable band is ranked by gap, largest first (the most left to learn
within reach; ties: smaller id). The **reverse direction** marks the traces
that carry knowledge the reference side lacks: s(r) - t(r) > ``reverse_margin``
while the teacher is not known right (it needs a reference reward).

:func:`allocate_rounds` re-scores as the student trains: each round asks for
a fresh student reward, exploits the learnable band and explores a seeded
sample of the rest that is not known wrong. Rewards:
:mod:`cdc_jax.contribution.rewards`; budgets: :mod:`cdc_jax.contribution.budgets`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, Mapping, Sequence

import numpy as np

from cdc_jax.contribution.budgets import Budget, TokenCounter, first_fit, token_counts
from cdc_jax.contribution.rewards import Reward, reward_values
from cdc_jax.data import records as records_lib

BANDS = ("too_easy", "learnable", "out_of_reach")


# ---------------------------------------------------------------------------
# The learnability gap.


@dataclasses.dataclass(frozen=True)
class GapBand:
  """Thresholds of the bands, in the rewards' units (gin: gin/contribution/allocation.gin).

  Attributes:
    min_gap: gap <= min_gap is too easy (the student already fits it as well).
    max_gap: gap > max_gap is out of reach (too far beyond the student).
    student_fit: a student reward >= this is too easy whatever the gap (None: off).
    require_teacher_correct: a trace whose teacher answer is known wrong is out of reach.
    reverse_margin: s - t > reverse_margin marks knowledge the reference lacks.
  """
  min_gap: float = 0.0
  max_gap: float = math.inf
  student_fit: float | None = None
  require_teacher_correct: bool = True
  reverse_margin: float = 0.0

  def __post_init__(self):
    if not self.min_gap < self.max_gap:
      raise ValueError(f"GapBand needs min_gap < max_gap, got {self.min_gap} and {self.max_gap}")
    if self.reverse_margin < 0:
      raise ValueError(f"GapBand.reverse_margin must be >= 0, got {self.reverse_margin}")

  def classify(self, *, student: float, gap: float,
               teacher_correct: bool | None) -> tuple[str, str]:
    """``(band, reason)`` of one trace (the order of the checks is the module docstring's)."""
    if self.require_teacher_correct and teacher_correct is False:
      return "out_of_reach", "teacher_wrong"
    if self.student_fit is not None and student >= self.student_fit:
      return "too_easy", "student_fits"
    if gap <= self.min_gap:
      return "too_easy", "no_gap"
    if gap > self.max_gap:
      return "out_of_reach", "beyond_reach"
    return "learnable", "within_reach"


@dataclasses.dataclass(frozen=True)
class TraceGap:
  """One trace's rewards, gap, band and reverse-direction flag."""
  id: str
  student: float
  reference: float
  gap: float
  teacher_correct: bool | None
  band: str
  reason: str
  teacher_lacks: bool | None


def gap_scores(records: Sequence[records_lib.TraceRecord], *, student: Sequence[float],
               reference: Sequence[float] | None = None, band: GapBand = GapBand(),
               reference_ceiling: float = 0.0) -> list[TraceGap]:
  """Gap, band and reverse flag per record from the two rewards' values.

  Without ``reference`` every t(r) is ``reference_ceiling`` (0.0: a perfect
  per-token fit, so the gap is the student's per-token loss; 1.0 for
  correctness) and ``teacher_lacks`` is None: the reverse direction needs a
  reference that can be wrong.
  """
  if len(student) != len(records) or (reference is not None and len(reference) != len(records)):
    raise ValueError(f"gap_scores needs one student (and reference) value per record: "
                     f"{len(records)} records, {len(student)} student values")
  out = []
  for i, record in enumerate(records):
    s = float(student[i])
    t = float(reference_ceiling if reference is None else reference[i])
    correct = record.teacher_correct
    band_name, reason = band.classify(student=s, gap=t - s, teacher_correct=correct)
    lacks = None if reference is None else bool(s - t > band.reverse_margin and correct is not True)
    out.append(TraceGap(record.id, s, t, t - s, correct, band_name, reason, lacks))
  return out


def learnable_order(gaps: Sequence[TraceGap]) -> list[str]:
  """Ids of the learnable band, largest gap first (ties: smaller id)."""
  return [g.id for g in sorted((g for g in gaps if g.band == "learnable"),
                               key=lambda g: (-g.gap, g.id))]


def gap_report(gaps: Sequence[TraceGap]) -> dict:
  """Band and reason counts, gap quantiles (to set thresholds by) and the reverse direction."""
  values = np.array([g.gap for g in gaps], np.float64)
  quantiles = ({f"q{int(q * 100):02d}": float(np.quantile(values, q))
                for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)} if len(values) else {})
  lacks = [g.teacher_lacks for g in gaps]
  return {"bands": {b: sum(g.band == b for g in gaps) for b in BANDS},
          "reasons": {r: sum(g.reason == r for g in gaps)
                      for r in sorted({g.reason for g in gaps})},
          "gap_quantiles": quantiles,
          "teacher_lacks": (None if any(v is None for v in lacks)
                            else [g.id for g in gaps if g.teacher_lacks])}


# ---------------------------------------------------------------------------
# Explore / exploit: re-scoring as the student trains.


@dataclasses.dataclass(frozen=True)
class Round:
  """One round of :func:`allocate_rounds`."""
  index: int
  exploited: tuple[str, ...]
  explored: tuple[str, ...]
  bands: Mapping[str, int]

  @property
  def chosen(self) -> tuple[str, ...]:
    return self.exploited + self.explored


def _split_limit(budget: Budget, explore: float, total: int) -> tuple[int, int, bool]:
  """(exploit limit, explore limit, in tokens?) of one round's budget."""
  limit = budget.tokens if budget.tokens is not None else budget.max_traces(total)
  explore_limit = math.floor(explore * limit + 0.5)
  return limit - explore_limit, explore_limit, budget.tokens is not None


def allocate_rounds(records: Sequence[records_lib.TraceRecord], *, rounds: int,
                    round_budget: Budget,
                    student_for_round: Callable[[int, tuple[str, ...]], Reward],
                    reference: Reward | None = None, band: GapBand = GapBand(),
                    reference_ceiling: float = 0.0, explore: float = 0.0, seed: int = 0,
                    count_tokens: TokenCounter | None = None) -> list[Round]:
  """Allocates traces over ``rounds``, re-scoring the student before each.

  Round i calls ``student_for_round(i, chosen_so_far)`` for a fresh student
  reward (the caller trains on the chosen traces between rounds) and scores
  the traces not chosen yet. ``1 - explore`` of the round's budget exploits
  the learnable band (largest gap first); ``explore`` of it takes a seeded
  random sample of the other remaining traces whose teacher is not known
  wrong (beyond reach may come within reach; the rewards may be noisy).
  The reference reward is computed once. A fraction budget is of all records.
  """
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}")
  if not 0 <= explore <= 1:
    raise ValueError(f"explore must be in [0, 1], got {explore}")
  tokens = token_counts(records, count_tokens) if count_tokens is not None else None
  if round_budget.tokens is not None and tokens is None:
    raise ValueError(f"budget {round_budget.name} counts tokens: give count_tokens=")
  ref_values = None if reference is None else reward_values(reference, records, "reference")
  ref_by_id = None if ref_values is None else dict(zip([r.id for r in records], ref_values))
  exploit_limit, explore_limit, in_tokens = _split_limit(round_budget, explore, len(records))
  rng = random.Random(seed)
  chosen: list[str] = []
  out = []
  for index in range(rounds):
    taken = set(chosen)
    remaining = [r for r in records if r.id not in taken]
    if not remaining:
      break
    student = reward_values(student_for_round(index, tuple(chosen)), remaining, "student")
    gaps = gap_scores(remaining, student=student, band=band, reference_ceiling=reference_ceiling,
                      reference=None if ref_by_id is None else [ref_by_id[r.id] for r in remaining])
    order = learnable_order(gaps)
    exploited = first_fit(order, exploit_limit, tokens) if in_tokens else order[:exploit_limit]
    taken.update(exploited)
    pool = sorted(g.id for g in gaps if g.id not in taken and g.reason != "teacher_wrong")
    rng.shuffle(pool)
    explored = first_fit(pool, explore_limit, tokens) if in_tokens else pool[:explore_limit]
    out.append(Round(index, tuple(exploited), tuple(explored), gap_report(gaps)["bands"]))
    chosen.extend([*exploited, *explored])
  return out
