"""The question templates of the embedded benchmark, one tuple per community.

A template draws a question about the fictional world
(:mod:`cdc_jax.data.knowledge`) and knows how to solve it over any view of
that world, step by step: solving over a world with one wrong fact gives the
teacher's mistaken rationale (:mod:`cdc_jax.data.synthetic`). Most questions
follow facts from one or two towns; :func:`_about_town` and :func:`_about_pair`
build those, so a new question is its wording, its facts and its conclusion.

Example (strategy): "Does Avonford have more bridges than Brisk?" with the
steps "Avonford has 4 bridges." "Brisk has 7 bridges." "4 is not more than 7."
and the answer "no".
"""

from __future__ import annotations

import dataclasses
import random
import string
from typing import Any, Callable, Sequence

from cdc_jax.data.compression import Step
from cdc_jax.data.knowledge import CLIMATES, KnowledgeBase

Solution = tuple[list[Step], str]
# A fact about a subject (a town or a region) in a world: its value and the step stating it.
Fact = Callable[[KnowledgeBase, Any, int], tuple[Any, Step]]


@dataclasses.dataclass(frozen=True)
class Question:
  """A drawn question and how to solve it.

  Attributes:
    text: the question.
    solve: the steps and answer reasoning over a (possibly wrong) world.
    involved: towns whose facts the reasoning uses (where a wrong fact matters).
    choices: the options of a multiple-choice question, else None.
  """
  text: str
  solve: Callable[[KnowledgeBase], Solution]
  involved: tuple[str, ...]
  choices: tuple[str, ...] | None = None


Template = Callable[[KnowledgeBase, random.Random], Question]


@dataclasses.dataclass(frozen=True)
class CommunitySpec:
  """An embedded community: its name, answer type, description and templates."""
  name: str
  answer_type: str
  description: str
  templates: tuple[Template, ...]


# --- Fact sentences shared by all communities (the transferable knowledge). ---

def _fact(lookup: Callable[[KnowledgeBase, Any], Any], sentence: str, terse: str) -> Fact:
  """A :data:`Fact`; ``sentence`` and ``terse`` format the subject ``{s}`` and value ``{v}``."""
  def fact(kb: KnowledgeBase, subject: Any, priority: int) -> tuple[Any, Step]:
    value = lookup(kb, subject)
    return value, Step(sentence.format(s=subject, v=value), terse.format(s=subject, v=value),
                       priority)
  return fact


_twin = _fact(lambda kb, a: kb.towns[a].twin, "The twin town of {s} is {v}.", "{s} twin {v}")
_founded = _fact(lambda kb, a: kb.towns[a].founded, "{s} was founded {v} years ago.",
                 "{s} founded {v} years ago")
_bridges = _fact(lambda kb, a: kb.towns[a].bridges, "{s} has {v} bridges.", "{s} {v} bridges")
_river = _fact(lambda kb, a: kb.towns[a].river, "{s} lies on the {v} river.", "{s} on {v} river")
_region = _fact(lambda kb, a: kb.towns[a].region, "{s} is in the {v} region.", "{s} in {v}")
_climate = _fact(lambda kb, g: kb.climates[g], "The {s} region has a {v} climate.", "{s} is {v}")


def _follow(view: KnowledgeBase, start: Any, hops: Sequence[Fact]) -> tuple[Any, list[Step]]:
  """Follows ``hops`` from ``start``: the last value and the steps (priority down to 0)."""
  value, steps = start, []
  for i, hop in enumerate(hops):
    value, step = hop(view, value, len(hops) - 1 - i)
    steps.append(step)
  return value, steps


def _about_town(text: str, hops: Sequence[Fact]) -> Template:
  """A look-up about one random town ``{a}``: follow ``hops``; the answer is the last value."""
  def template(kb: KnowledgeBase, rng: random.Random) -> Question:
    a = rng.choice(kb.town_names)

    def solve(view: KnowledgeBase) -> Solution:
      value, steps = _follow(view, a, hops)
      return steps, value
    return Question(text.format(a=a), solve, (a,))
  return template


def _about_pair(text: str, fact: Fact, conclude: Callable[[Any, Any], Solution]) -> Template:
  """A question about two random towns ``{a}``, ``{b}``: one fact of each, then ``conclude``.

  ``conclude(x, y)`` gives the concluding steps and the answer from the two values.
  """
  def template(kb: KnowledgeBase, rng: random.Random) -> Question:
    a, b = rng.sample(kb.town_names, 2)

    def solve(view: KnowledgeBase) -> Solution:
      x, s1 = fact(view, a, 1)
      y, s2 = fact(view, b, 1)
      steps, answer = conclude(x, y)
      return [s1, s2, *steps], answer
    return Question(text.format(a=a, b=b), solve, (a, b))
  return template


def _yes(flag: bool) -> str:
  return "yes" if flag else "no"


# --- strategy: yes/no, multi-hop. ---

def _older_than_twin(kb: KnowledgeBase, rng: random.Random) -> Question:
  a, b = rng.sample(kb.town_names, 2)
  while a == kb.towns[b].twin:
    a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    c, s1 = _twin(view, b, 2)
    x, s2 = _founded(view, a, 1)
    y, s3 = _founded(view, c, 1)
    older = x > y
    rel = "more" if older else "less"
    s4 = Step(f"{x} is {rel} than {y}, so {a} is {'older' if older else 'younger'} than {c}.",
              f"{x} {rel} than {y}", 0)
    return [s1, s2, s3, s4], _yes(older)
  return Question(f"Is {a} older than the twin town of {b}?", solve, (a, b))


def _river_freezes(kb: KnowledgeBase, rng: random.Random) -> Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    r, s1 = _river(view, a, 1)
    freezes = view.rivers[r].freezes
    verb = "freezes" if freezes else "does not freeze"
    return [s1, Step(f"The {r} river {verb} in winter.", f"{r} {verb}", 0)], _yes(freezes)
  return Question(f"Does the river through {a} freeze in winter?", solve, (a,))


def _more(x: int, y: int) -> Solution:
  rel = "more" if x > y else "not more"
  return [Step(f"{x} is {rel} than {y}.", f"{x} {rel} than {y}", 0)], _yes(x > y)


def _in_climate(kb: KnowledgeBase, rng: random.Random) -> Question:
  a = rng.choice(kb.town_names)
  asked = rng.choice(CLIMATES)

  def solve(view: KnowledgeBase) -> Solution:
    c, steps = _follow(view, a, (_region, _climate))
    return steps, _yes(c == asked)
  return Question(f"Is {a} in a region with a {asked} climate?", solve, (a,))


def _twins_share_river(kb: KnowledgeBase, rng: random.Random) -> Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 2)
    r1, s2 = _river(view, a, 1)
    r2, s3 = _river(view, b, 1)
    same = r1 == r2
    s4 = Step(f"So {a} and {b} {'lie' if same else 'do not lie'} on the same river.",
              f"{'same' if same else 'different'} rivers", 0)
    return [s1, s2, s3, s4], _yes(same)
  return Question(f"Do {a} and its twin town lie on the same river?", solve, (a,))


# --- commonsense: five-way multiple choice. ---

def _options(rng: random.Random, answer: str, pool: Sequence[str]) -> tuple[str, ...]:
  options = rng.sample([p for p in pool if p != answer], 4) + [answer]
  rng.shuffle(options)
  return tuple(options)


def _letter(options: Sequence[str], choice: str) -> str:
  return string.ascii_lowercase[options.index(choice)]


def _town_on_river(kb: KnowledgeBase, rng: random.Random) -> Question:
  answer = rng.choice(kb.town_names)
  r = kb.towns[answer].river
  others = [t for t in kb.town_names if kb.towns[t].river != r]
  options = _options(rng, answer, others)

  def solve(view: KnowledgeBase) -> Solution:
    steps, picked = [], None
    for option in options:
      river, step = _river(view, option, 1)
      if river == r and picked is None:
        picked, step = option, dataclasses.replace(step, priority=0)
      steps.append(step)
    return steps, picked or options[0]
  return Question(f"Which town lies on the {r} river?", solve, options, options)


def _twin_of(kb: KnowledgeBase, rng: random.Random) -> Question:
  a = rng.choice(kb.town_names)
  options = _options(rng, kb.towns[a].twin, [t for t in kb.town_names if t != a])

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 0)
    picked = b if b in options else options[0]
    s2 = Step(f"{picked} is option ({_letter(options, picked)}).",
              f"option ({_letter(options, picked)})", 1)
    return [s1, s2], picked
  return Question(f"Which town is the twin town of {a}?", solve, (a,), options)


def _oldest(kb: KnowledgeBase, rng: random.Random) -> Question:
  options = tuple(rng.sample(kb.town_names, 5))

  def solve(view: KnowledgeBase) -> Solution:
    founded = [_founded(view, o, 1) for o in options]
    best = max(range(5), key=lambda i: founded[i][0])
    x = founded[best][0]
    s = Step(f"The largest of these is {x}, so {options[best]} is the oldest.",
             f"{options[best]} oldest", 0)
    return [f[1] for f in founded] + [s], options[best]
  return Question("Which of these towns is the oldest?", solve, options, options)


def _town_with_climate(kb: KnowledgeBase, rng: random.Random) -> Question:
  climate = rng.choice(CLIMATES)
  fits = [t for t in kb.town_names if kb.climates[kb.towns[t].region] == climate]
  answer = rng.choice(fits)
  options = _options(rng, answer, [t for t in kb.town_names if t not in fits])

  def solve(view: KnowledgeBase) -> Solution:
    region = next(g for g, c in view.climates.items() if c == climate)
    _, s1 = _climate(view, region, 1)
    picked = next((o for o in options if view.towns[o].region == region), options[0])
    _, s2 = _region(view, picked, 0)
    return [s1, s2], picked
  return Question(f"Which town is in a region with a {climate} climate?", solve, options, options)


# --- arithmetic: numbers. ---

def _sum(x: int, y: int) -> Solution:
  return [Step(f"{x} + {y} = {x + y}.", f"{x} + {y} = {x + y}", 0)], str(x + y)


def _gap(x: int, y: int) -> Solution:
  hi, lo = max(x, y), min(x, y)
  return [Step(f"{hi} - {lo} = {hi - lo}.", f"{hi} - {lo} = {hi - lo}", 0)], str(hi - lo)


def _lamps(kb: KnowledgeBase, rng: random.Random) -> Question:
  a = rng.choice(kb.town_names)
  k = rng.randint(2, 9)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 2)
    x, s2 = _bridges(view, a, 1)
    y, s3 = _bridges(view, b, 1)
    s4 = Step(f"Together they have {x} + {y} = {x + y} bridges.", f"{x} + {y} = {x + y}", 1)
    s5 = Step(f"{x + y} * {k} = {(x + y) * k} lamps.", f"{x + y} * {k} = {(x + y) * k}", 0)
    return [s1, s2, s3, s4, s5], str((x + y) * k)
  return Question(f"Each bridge in {a} and in its twin town has {k} lamps. "
                  "How many lamps are on these bridges in total?", solve, (a,))


COMMUNITIES = (
    CommunitySpec(
        "strategy", "boolean", "Multi-hop yes/no questions about towns (StrategyQA-like).",
        (_older_than_twin, _river_freezes,
         _about_pair("Does {a} have more bridges than {b}?", _bridges, _more),
         _in_climate, _twins_share_river)),
    CommunitySpec(
        "commonsense", "choice", "Five-way multiple choice about towns (CommonsenseQA-like).",
        (_town_on_river, _twin_of, _oldest, _town_with_climate)),
    CommunitySpec(
        "arithmetic", "number", "Multi-step arithmetic over town facts (GSM8K-like).",
        (_about_pair("How many bridges do {a} and {b} have together?", _bridges, _sum),
         _lamps,
         _about_pair("How many years apart were {a} and {b} founded?", _founded, _gap))),
    CommunitySpec(
        "trivia", "text", "Free-text look-ups of one to three hops.",
        (_about_town("Which river flows through the twin town of {a}?", (_twin, _river)),
         _about_town("What is the climate where {a} lies?", (_region, _climate)),
         _about_town("What is the climate where the twin town of {a} lies?",
                     (_twin, _region, _climate)),
         _about_town("In which region is the twin town of {a}?", (_twin, _region)),
         _about_town("On which river does {a} lie?", (_river,)),
         _about_town("What is the twin town of {a}?", (_twin,)),
         _about_town("In which region is {a}?", (_region,)))),
)
COMMUNITY_NAMES = tuple(c.name for c in COMMUNITIES)
