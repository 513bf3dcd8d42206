"""The embedded benchmark: four communities asking about one fictional world.

===========  ===========  ==================================================
community    answer type  questions (like)
===========  ===========  ==================================================
strategy     boolean      multi-hop yes/no comparisons (StrategyQA)
commonsense  choice       five-way multiple choice (CommonsenseQA)
arithmetic   number       multi-step arithmetic over town facts (GSM8K)
trivia       text         one- to three-hop free-text look-ups
===========  ===========  ==================================================

A programmatic teacher ("oracle") writes each question's step-by-step
rationale (level 6) from the knowledge base; levels 1..5 are compressions of
it (:mod:`cdc_jax.data.compression`). With probability ``teacher_error_rate``
the teacher reasons from a knowledge base with one wrong fact, so its
rationale and usually its answer are wrong, as a real teacher's are; the record keeps
the gold answer and the teacher's answer side by side.

    python -m cdc_jax.data.synthetic --out /tmp/cdc_communities
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import string
from pathlib import Path
from typing import Callable, Sequence

from cdc_jax.data import records as records_lib
from cdc_jax.data.compression import Step, all_levels
from cdc_jax.data.knowledge import CLIMATES, KnowledgeBase, build_knowledge_base

Solution = tuple[list[Step], str]


@dataclasses.dataclass(frozen=True)
class _Question:
  text: str
  solve: Callable[[KnowledgeBase], Solution]  # Reasoning over a (possibly wrong) world.
  involved: tuple[str, ...]                   # Towns whose facts the reasoning uses.
  choices: tuple[str, ...] | None = None


# --- Fact sentences shared by all communities (the transferable knowledge). ---

def _twin(kb: KnowledgeBase, a: str, priority: int) -> tuple[str, Step]:
  b = kb.towns[a].twin
  return b, Step(f"The twin town of {a} is {b}.", f"{a} twin {b}", priority)


def _founded(kb: KnowledgeBase, a: str, priority: int) -> tuple[int, Step]:
  x = kb.towns[a].founded
  return x, Step(f"{a} was founded {x} years ago.", f"{a} founded {x} years ago", priority)


def _bridges(kb: KnowledgeBase, a: str, priority: int) -> tuple[int, Step]:
  x = kb.towns[a].bridges
  return x, Step(f"{a} has {x} bridges.", f"{a} {x} bridges", priority)


def _river(kb: KnowledgeBase, a: str, priority: int) -> tuple[str, Step]:
  r = kb.towns[a].river
  return r, Step(f"{a} lies on the {r} river.", f"{a} on {r} river", priority)


def _region(kb: KnowledgeBase, a: str, priority: int) -> tuple[str, Step]:
  g = kb.towns[a].region
  return g, Step(f"{a} is in the {g} region.", f"{a} in {g}", priority)


def _climate(kb: KnowledgeBase, region: str, priority: int) -> tuple[str, Step]:
  c = kb.climates[region]
  return c, Step(f"The {region} region has a {c} climate.", f"{region} is {c}", priority)


def _yes(flag: bool) -> str:
  return "yes" if flag else "no"


# --- strategy: yes/no, multi-hop. ---

def _older_than_twin(kb: KnowledgeBase, rng: random.Random) -> _Question:
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
  return _Question(f"Is {a} older than the twin town of {b}?", solve, (a, b))


def _river_freezes(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    r, s1 = _river(view, a, 1)
    freezes = view.rivers[r].freezes
    verb = "freezes" if freezes else "does not freeze"
    return [s1, Step(f"The {r} river {verb} in winter.", f"{r} {verb}", 0)], _yes(freezes)
  return _Question(f"Does the river through {a} freeze in winter?", solve, (a,))


def _more_bridges(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a, b = rng.sample(kb.town_names, 2)

  def solve(view: KnowledgeBase) -> Solution:
    x, s1 = _bridges(view, a, 1)
    y, s2 = _bridges(view, b, 1)
    more = x > y
    rel = "more" if more else "not more"
    return [s1, s2, Step(f"{x} is {rel} than {y}.", f"{x} {rel} than {y}", 0)], _yes(more)
  return _Question(f"Does {a} have more bridges than {b}?", solve, (a, b))


def _in_climate(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)
  asked = rng.choice(CLIMATES)

  def solve(view: KnowledgeBase) -> Solution:
    g, s1 = _region(view, a, 1)
    c, s2 = _climate(view, g, 0)
    return [s1, s2], _yes(c == asked)
  return _Question(f"Is {a} in a region with a {asked} climate?", solve, (a,))


def _twins_share_river(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 2)
    r1, s2 = _river(view, a, 1)
    r2, s3 = _river(view, b, 1)
    same = r1 == r2
    s4 = Step(f"So {a} and {b} {'lie' if same else 'do not lie'} on the same river.",
              f"{'same' if same else 'different'} rivers", 0)
    return [s1, s2, s3, s4], _yes(same)
  return _Question(f"Do {a} and its twin town lie on the same river?", solve, (a,))


# --- commonsense: five-way multiple choice. ---

def _options(rng: random.Random, answer: str, pool: Sequence[str]) -> tuple[str, ...]:
  options = rng.sample([p for p in pool if p != answer], 4) + [answer]
  rng.shuffle(options)
  return tuple(options)


def _letter(options: Sequence[str], choice: str) -> str:
  return string.ascii_lowercase[options.index(choice)]


def _town_on_river(kb: KnowledgeBase, rng: random.Random) -> _Question:
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
  return _Question(f"Which town lies on the {r} river?", solve, options, options)


def _twin_of(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)
  options = _options(rng, kb.towns[a].twin, [t for t in kb.town_names if t != a])

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 0)
    picked = b if b in options else options[0]
    s2 = Step(f"{picked} is option ({_letter(options, picked)}).",
              f"option ({_letter(options, picked)})", 1)
    return [s1, s2], picked
  return _Question(f"Which town is the twin town of {a}?", solve, (a,), options)


def _oldest(kb: KnowledgeBase, rng: random.Random) -> _Question:
  options = tuple(rng.sample(kb.town_names, 5))

  def solve(view: KnowledgeBase) -> Solution:
    founded = [_founded(view, o, 1) for o in options]
    best = max(range(5), key=lambda i: founded[i][0])
    x = founded[best][0]
    s = Step(f"The largest of these is {x}, so {options[best]} is the oldest.",
             f"{options[best]} oldest", 0)
    return [f[1] for f in founded] + [s], options[best]
  return _Question("Which of these towns is the oldest?", solve, options, options)


def _town_with_climate(kb: KnowledgeBase, rng: random.Random) -> _Question:
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
  return _Question(f"Which town is in a region with a {climate} climate?", solve, options, options)


# --- arithmetic: numbers. ---

def _bridges_sum(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a, b = rng.sample(kb.town_names, 2)

  def solve(view: KnowledgeBase) -> Solution:
    x, s1 = _bridges(view, a, 1)
    y, s2 = _bridges(view, b, 1)
    return [s1, s2, Step(f"{x} + {y} = {x + y}.", f"{x} + {y} = {x + y}", 0)], str(x + y)
  return _Question(f"How many bridges do {a} and {b} have together?", solve, (a, b))


def _lamps(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)
  k = rng.randint(2, 9)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 2)
    x, s2 = _bridges(view, a, 1)
    y, s3 = _bridges(view, b, 1)
    s4 = Step(f"Together they have {x} + {y} = {x + y} bridges.", f"{x} + {y} = {x + y}", 1)
    s5 = Step(f"{x + y} * {k} = {(x + y) * k} lamps.", f"{x + y} * {k} = {(x + y) * k}", 0)
    return [s1, s2, s3, s4, s5], str((x + y) * k)
  return _Question(f"Each bridge in {a} and in its twin town has {k} lamps. "
                   "How many lamps are on these bridges in total?", solve, (a,))


def _age_gap(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a, b = rng.sample(kb.town_names, 2)

  def solve(view: KnowledgeBase) -> Solution:
    x, s1 = _founded(view, a, 1)
    y, s2 = _founded(view, b, 1)
    hi, lo = max(x, y), min(x, y)
    return [s1, s2, Step(f"{hi} - {lo} = {hi - lo}.", f"{hi} - {lo} = {hi - lo}", 0)], str(hi - lo)
  return _Question(f"How many years apart were {a} and {b} founded?", solve, (a, b))


# --- trivia: free text. ---

def _twin_river(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 1)
    r, s2 = _river(view, b, 0)
    return [s1, s2], r
  return _Question(f"Which river flows through the twin town of {a}?", solve, (a,))


def _climate_of(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    g, s1 = _region(view, a, 1)
    c, s2 = _climate(view, g, 0)
    return [s1, s2], c
  return _Question(f"What is the climate where {a} lies?", solve, (a,))


def _twin_climate(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 2)
    g, s2 = _region(view, b, 1)
    c, s3 = _climate(view, g, 0)
    return [s1, s2, s3], c
  return _Question(f"What is the climate where the twin town of {a} lies?", solve, (a,))


def _twin_region(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 1)
    g, s2 = _region(view, b, 0)
    return [s1, s2], g
  return _Question(f"In which region is the twin town of {a}?", solve, (a,))


def _twin_name(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    b, s1 = _twin(view, a, 0)
    return [s1], b
  return _Question(f"What is the twin town of {a}?", solve, (a,))


def _region_of(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    g, s1 = _region(view, a, 0)
    return [s1], g
  return _Question(f"In which region is {a}?", solve, (a,))


def _river_of(kb: KnowledgeBase, rng: random.Random) -> _Question:
  a = rng.choice(kb.town_names)

  def solve(view: KnowledgeBase) -> Solution:
    r, s1 = _river(view, a, 0)
    return [s1], r
  return _Question(f"On which river does {a} lie?", solve, (a,))


@dataclasses.dataclass(frozen=True)
class _CommunitySpec:
  name: str
  answer_type: str
  description: str
  templates: tuple[Callable[[KnowledgeBase, random.Random], _Question], ...]


COMMUNITIES = (
    _CommunitySpec("strategy", "boolean", "Multi-hop yes/no questions about towns (StrategyQA-like).",
                   (_older_than_twin, _river_freezes, _more_bridges, _in_climate, _twins_share_river)),
    _CommunitySpec("commonsense", "choice", "Five-way multiple choice about towns (CommonsenseQA-like).",
                   (_town_on_river, _twin_of, _oldest, _town_with_climate)),
    _CommunitySpec("arithmetic", "number", "Multi-step arithmetic over town facts (GSM8K-like).",
                   (_bridges_sum, _lamps, _age_gap)),
    _CommunitySpec("trivia", "text", "Free-text look-ups of one to three hops.",
                   (_twin_river, _climate_of, _twin_climate, _twin_region, _river_of, _twin_name,
                    _region_of)),
)
COMMUNITY_NAMES = tuple(c.name for c in COMMUNITIES)


_CORRUPTION_TRIES = 40


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes, seed and teacher error rate of the embedded benchmark."""
  seed: int = 0
  train_size: int = 240
  test_size: int = 60
  teacher_error_rate: float = 0.1
  num_towns: int = 80
  num_rivers: int = 8
  # When a community has fewer distinct questions than train_size + test_size, keep
  # test_size and shrink its train split instead of raising (small worlds).
  shrink_train: bool = False


def demo_world() -> SyntheticConfig:
  """The world of `make demo`: small enough that a tiny student trained for a few
  hundred steps on a CPU can learn it.

  With the default 80 towns most test questions ask for facts that training
  states rarely or never (a test item needs the founding years, bridges,
  rivers and regions of its towns); a tiny random-init student then memorises
  its training questions and answers test ones at chance. Here every town's
  facts recur in many training rationales of every community, so a test
  question (never seen in training) is answerable from what training states,
  and pooling communities multiplies how often each fact is seen.
  """
  return SyntheticConfig(**DEMO_WORLD)


DEMO_WORLD = {"num_towns": 16, "num_rivers": 4, "train_size": 240, "test_size": 60,
              "shrink_train": True}


def _questions(spec: _CommunitySpec, kb: KnowledgeBase, rng: random.Random,
               count: int, *, at_least: int | None = None) -> list[_Question]:
  """``count`` distinct questions; with ``at_least``, fewer (but that many) are enough."""
  out, seen = [], set()
  for _ in range(200 * count):
    if len(out) == count:
      return out
    q = rng.choice(spec.templates)(kb, rng)
    key = (q.text, q.choices)  # Multiple-choice questions differ by their options too.
    if key not in seen:
      seen.add(key)
      out.append(q)
  if at_least is not None and len(out) >= at_least:
    return out
  raise ValueError(f"community {spec.name}: only {len(out)} distinct questions for {count} "
                   "requested; use more towns or fewer examples")


def generate_community(spec_name: str, config: SyntheticConfig = SyntheticConfig(),
                       kb: KnowledgeBase | None = None) -> dict[str, list[records_lib.TraceRecord]]:
  """Generates one community's records per split, deterministically."""
  spec = next((c for c in COMMUNITIES if c.name == spec_name), None)
  if spec is None:
    raise ValueError(f"unknown embedded community {spec_name!r}: expected one of {COMMUNITY_NAMES}")
  if not 0.0 <= config.teacher_error_rate <= 1.0:
    raise ValueError(f"teacher_error_rate must be in [0, 1], got {config.teacher_error_rate}")
  kb = kb or build_knowledge_base(seed=config.seed, num_towns=config.num_towns,
                                  num_rivers=config.num_rivers)
  rng = random.Random(f"{spec.name}:{config.seed}")
  questions = _questions(spec, kb, rng, config.train_size + config.test_size,
                         at_least=config.test_size + 1 if config.shrink_train else None)
  # A small world has fewer distinct questions for some communities: their train split shrinks.
  train_size = len(questions) - config.test_size
  provenance = {"source": f"cdc_jax.data.synthetic(seed={config.seed})", "license": "CC0-1.0",
                "teacher_error_rate": config.teacher_error_rate}
  out: dict[str, list[records_lib.TraceRecord]] = {"train": [], "test": []}
  for i, q in enumerate(questions):
    split = "train" if i < train_size else "test"
    steps, gold = q.solve(kb)
    teacher_answer = gold
    if rng.random() < config.teacher_error_rate:
      # The teacher misremembers a fact; retry so that the mistake usually
      # reaches the answer (some wrong facts cannot change it).
      for _ in range(_CORRUPTION_TRIES):
        steps, teacher_answer = q.solve(kb.corrupted(rng, rng.choice(q.involved)))
        if teacher_answer != gold:
          break
    out[split].append(records_lib.TraceRecord(
        id=f"{spec.name}-{split}-{len(out[split]):05d}", community=spec.name, split=split,
        question=q.text, choices=q.choices, answer=gold, answer_type=spec.answer_type,
        rationales=all_levels(steps), teacher="oracle", teacher_answer=teacher_answer,
        provenance=provenance))
  return out


def build_embedded_communities(out_dir: str | Path, config: SyntheticConfig = SyntheticConfig(),
                               *, communities: Sequence[str] = COMMUNITY_NAMES) -> list[Path]:
  """Writes the embedded communities under ``out_dir``; returns manifest paths."""
  kb = build_knowledge_base(seed=config.seed, num_towns=config.num_towns,
                            num_rivers=config.num_rivers)
  paths = []
  for name in communities:
    spec = next(c for c in COMMUNITIES if c.name == name)
    recs = generate_community(name, config, kb)
    manifest = records_lib.CommunityManifest(
        name=name, description=spec.description, answer_type=spec.answer_type,
        splits={split: f"{split}.jsonl" for split in recs}, license="CC0-1.0", teacher="oracle")
    paths.append(records_lib.write_community(Path(out_dir) / name, manifest, recs))
  return paths


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="directory for the community directories")
  for field in dataclasses.fields(SyntheticConfig):
    if isinstance(field.default, bool):
      parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction,
                          default=field.default)
    else:
      parser.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
  args = parser.parse_args(argv)
  config = SyntheticConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)})
  for path in build_embedded_communities(args.out, config):
    community = records_lib.load_community(path)
    print(f"wrote {path}\n{community.report}")


if __name__ == "__main__":
  main()
