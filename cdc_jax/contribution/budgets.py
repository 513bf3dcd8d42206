"""Selection budgets, always explicit: traces kept, a fraction of the candidates, or tokens.

A bare number is never read by its form (``1`` as "every trace"): the caller
says which unit it means (``Budget(traces=1)``, ``--budget_traces 1``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

from cdc_jax.data import records as records_lib

TokenCounter = Callable[[Sequence[records_lib.TraceRecord]], Sequence[int]]
"""``count_tokens(records) -> tokens`` each trace costs to train on."""


@dataclasses.dataclass(frozen=True)
class Budget:
  """Exactly one of: ``traces`` kept, ``fraction`` of the candidates, ``tokens`` kept."""
  traces: int | None = None
  fraction: float | None = None
  tokens: int | None = None

  def __post_init__(self):
    given = [k for k in ("traces", "fraction", "tokens") if getattr(self, k) is not None]
    if len(given) != 1:
      raise ValueError("a budget is exactly one of traces=, fraction= or tokens= (--budget_traces"
                       f" / --budget_fraction / --budget_tokens); got {given or 'none'}")
    for key in ("traces", "tokens"):
      value = getattr(self, key)
      if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"budget {key} must be a whole number >= 1, got {value!r}")
    f = self.fraction
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float))
                          or not 0 < f <= 1):
      raise ValueError(f"budget fraction must be in (0, 1], got {f!r}")

  @property
  def name(self) -> str:
    """'traces=100', 'fraction=0.5' or 'tokens=20000'."""
    if self.traces is not None:
      return f"traces={self.traces}"
    if self.fraction is not None:
      return f"fraction={self.fraction:g}"
    return f"tokens={self.tokens}"

  def max_traces(self, total: int) -> int | None:
    """Traces allowed out of ``total`` candidates (fractions round half up, at least 1);
    None for a token budget."""
    if self.traces is not None:
      return min(self.traces, total)
    if self.fraction is not None:
      return min(total, max(1, math.floor(self.fraction * total + 0.5)))
    return None


def take_within_budget(order: Sequence[str], budget: Budget, *, total: int,
                       tokens: Mapping[str, int] | None = None) -> list[str]:
  """The first ids of ``order`` that fit ``budget`` (``total``: the candidates a fraction is of).

  A token budget goes down ``order`` and keeps every trace that still fits
  (first fit: a long trace is skipped, shorter ones after it may still fit).
  """
  if budget.tokens is None:
    return list(order[:budget.max_traces(total)])
  if tokens is None:
    raise ValueError(f"budget {budget.name} counts tokens: give a token counter (count_tokens=)")
  return first_fit(order, budget.tokens, tokens)


def first_fit(order: Sequence[str], limit: int, tokens: Mapping[str, int]) -> list[str]:
  """Ids of ``order`` kept going down it while their tokens fit ``limit`` (skipping misfits)."""
  kept, used = [], 0
  for i in order:
    if used + tokens[i] <= limit:
      kept.append(i)
      used += tokens[i]
  return kept


def token_counts(records: Sequence[records_lib.TraceRecord],
                 count_tokens: TokenCounter) -> dict[str, int]:
  """``id -> tokens``, checked: one non-negative whole number per record."""
  counts = list(count_tokens(records))
  if len(counts) != len(records):
    raise ValueError(f"token counter returned {len(counts)} counts for {len(records)} records")
  bad = [r.id for r, c in zip(records, counts) if int(c) != c or c < 0]
  if bad:
    raise ValueError(f"token counts of records {bad[:5]} are not whole numbers >= 0")
  return {r.id: int(c) for r, c in zip(records, counts)}


