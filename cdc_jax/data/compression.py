"""Rationale granularity: six levels from one step-by-step rationale.

A rationale is a list of :class:`Step` s, each with a full sentence, a terse
form and a priority (0 = the key step that settles the answer, higher = less
essential). Level 6 is the full CoT; lower levels keep fewer, terser steps:

========  ======================  ==============================
level     steps kept (of n)       wording
========  ======================  ==============================
6         all                     full sentences with connectives
5         all                     full sentences
4         ceil(2n/3)              full sentences
3         ceil(n/2)               terse
2         ceil(n/3)               terse
1         1 (the key step)        terse
========  ======================  ==============================

Steps are chosen by priority (ties: later steps first, as the conclusion
comes last) and kept in their original order, so every level is a
deterministic compression of level 6 and never longer than the level above.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Step:
  """One reasoning step: a full sentence, its terse form, and its priority."""
  text: str
  terse: str
  priority: int


_KEEP = {6: 1.0, 5: 1.0, 4: 2 / 3, 3: 1 / 2, 2: 1 / 3}
_CONNECTIVES = ("First,", "Next,", "Then,", "Also,")


def _lower_first(sentence: str) -> str:
  # Entity names are capitalised; only lower a leading common word.
  first, _, rest = sentence.partition(" ")
  return (first.lower() if first in ("The", "Each", "Its", "Their", "Together", "So") else first) + (" " + rest if rest else "")


def _kept_indices(steps: Sequence[Step], count: int) -> list[int]:
  order = sorted(range(len(steps)), key=lambda i: (steps[i].priority, -i))
  return sorted(order[:count])


def compress(steps: Sequence[Step], level: int) -> str:
  """The rationale text of ``steps`` at granularity ``level`` (1..6)."""
  if not steps:
    raise ValueError("a rationale needs at least one step")
  if level not in (1, 2, 3, 4, 5, 6):
    raise ValueError(f"invalid rationale level {level!r}: expected 1..6")
  n = len(steps)
  count = 1 if level == 1 else max(1, math.ceil(n * _KEEP[level]))
  kept = [steps[i] for i in _kept_indices(steps, count)]
  if level <= 3:
    return "; ".join(s.terse for s in kept) + "."
  if level < 6 or n == 1:
    return " ".join(s.text for s in kept)
  parts = []
  for i, step in enumerate(kept):
    if i == len(kept) - 1:
      parts.append(f"Finally, {_lower_first(step.text)}")
    else:
      parts.append(f"{_CONNECTIVES[min(i, len(_CONNECTIVES) - 1)]} {_lower_first(step.text)}")
  return " ".join(parts)


def all_levels(steps: Sequence[Step]) -> dict[int, str]:
  """Every level's rationale text, keyed 1..6."""
  return {level: compress(steps, level) for level in range(1, 7)}
