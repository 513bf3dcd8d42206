"""A seeded knowledge base of fictional towns, rivers and regions.

Every embedded community asks about the same world, so a rationale written
for one community (``Zorvak lies on the Ashen river``) carries knowledge that
another community's questions need: the premise of coalition gains.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Mapping

_SYLLABLES = ("zor", "vak", "mel", "in", "tar", "lo", "bri", "quen", "dus", "ka", "fen", "ro",
              "li", "mar", "oth", "vel", "sa", "nir", "gal", "eth", "um", "bra", "tis", "por")
REGIONS = ("north", "south", "east", "west")
CLIMATES = ("snowy", "dry", "rainy", "windy")


@dataclasses.dataclass(frozen=True)
class Town:
  name: str
  founded: int   # Years ago.
  bridges: int
  river: str
  region: str
  twin: str      # Another town's name; the relation is symmetric.


@dataclasses.dataclass(frozen=True)
class River:
  name: str
  freezes: bool  # Whether it freezes in winter.


@dataclasses.dataclass(frozen=True)
class KnowledgeBase:
  """The fictional world: towns by name, rivers by name, region -> climate."""
  towns: Mapping[str, Town]
  rivers: Mapping[str, River]
  climates: Mapping[str, str]

  @property
  def town_names(self) -> list[str]:
    return sorted(self.towns)

  def corrupted(self, rng: random.Random, town: str) -> "KnowledgeBase":
    """A copy in which one fact about ``town`` is wrong: a teacher's mistake."""
    t = self.towns[town]
    field = rng.choice(("founded", "bridges", "river", "region", "twin"))
    if field == "founded":
      t = dataclasses.replace(t, founded=t.founded + rng.choice((-1, 1)) * rng.randint(20, 200))
      t = dataclasses.replace(t, founded=max(10, t.founded))
    elif field == "bridges":
      t = dataclasses.replace(t, bridges=max(1, t.bridges + rng.choice((-1, 1)) * rng.randint(2, 9)))
    elif field == "river":
      t = dataclasses.replace(t, river=rng.choice([r for r in self.rivers if r != t.river]))
    elif field == "region":
      t = dataclasses.replace(t, region=rng.choice([r for r in REGIONS if r != t.region]))
    else:
      t = dataclasses.replace(t, twin=rng.choice([n for n in self.towns if n not in (t.twin, town)]))
    return dataclasses.replace(self, towns={**self.towns, town: t})


def _names(rng: random.Random, count: int, syllables: tuple[int, int]) -> list[str]:
  out: list[str] = []
  seen = set()
  while len(out) < count:
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(*syllables))).capitalize()
    if name not in seen and len(name) >= 4:
      seen.add(name)
      out.append(name)
  return out


def build_knowledge_base(*, seed: int = 0, num_towns: int = 60,
                         num_rivers: int = 8) -> KnowledgeBase:
  """Builds the world deterministically from ``seed``."""
  if num_towns < 6 or num_towns % 2:
    raise ValueError(f"num_towns must be an even number >= 6, got {num_towns}")
  if num_rivers < 2:
    raise ValueError(f"num_rivers must be >= 2, got {num_rivers}")
  rng = random.Random(f"kb:{seed}")
  names = _names(rng, num_towns + num_rivers, (2, 3))
  town_names, river_names = names[:num_towns], names[num_towns:]
  rivers = {name: River(name, freezes=rng.random() < 0.5) for name in river_names}
  climates = dict(zip(REGIONS, rng.sample(CLIMATES, len(CLIMATES))))
  order = town_names[:]
  rng.shuffle(order)
  twins = {}
  for a, b in zip(order[::2], order[1::2]):
    twins[a], twins[b] = b, a
  foundings = rng.sample(range(30, 30 + 15 * num_towns), num_towns)  # Distinct: no ties.
  towns = {
      name: Town(name=name, founded=foundings[i], bridges=rng.randint(2, 40),
                 river=rng.choice(river_names), region=rng.choice(REGIONS), twin=twins[name])
      for i, name in enumerate(town_names)
  }
  return KnowledgeBase(towns=towns, rivers=rivers, climates=climates)
