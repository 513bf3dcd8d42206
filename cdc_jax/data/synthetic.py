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
it (:mod:`cdc_jax.data.compression`); the questions come from the templates
of :mod:`cdc_jax.data.synthetic_questions`. With probability
``teacher_error_rate`` the teacher reasons from a knowledge base with one wrong
fact, so its rationale and usually its answer are wrong, as a real teacher's
are; the record keeps the gold answer and the teacher's answer side by side.

    python -m cdc_jax.data.synthetic --out /tmp/cdc_communities
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path
from typing import Sequence

from cdc_jax.data import records as records_lib
from cdc_jax.data import synthetic_questions as questions_lib
from cdc_jax.data.compression import all_levels
from cdc_jax.data.knowledge import KnowledgeBase, build_knowledge_base

COMMUNITIES = questions_lib.COMMUNITIES
COMMUNITY_NAMES = questions_lib.COMMUNITY_NAMES
# Bumped whenever the same config generates different records (caches key on it).
GENERATOR_VERSION = 2


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
  and pooling communities multiplies how often each fact is seen. Its 480
  training questions per community (trivia's run out at 52) state each town's
  numbers often enough that the student recalls them for new pairs of towns:
  with 240, strategy's student, which must recall two towns' founding years or
  bridge counts for most questions, recalled both numbers in 4-6 of 40 test
  comparisons after 300 steps and stayed at chance (seeds 0 and 1, 2-core Xeon).
  """
  return SyntheticConfig(**DEMO_WORLD)


DEMO_WORLD = {"num_towns": 16, "num_rivers": 4, "train_size": 480, "test_size": 60,
              "shrink_train": True}


def _questions(spec: questions_lib.CommunitySpec, kb: KnowledgeBase, rng: random.Random,
               count: int, *, at_least: int | None = None) -> list[questions_lib.Question]:
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
  # The splits are a random partition of the distinct questions. Taken in the order drawn, a
  # small world's test split was its tail: drawn after the templates with few distinct
  # questions had run out, so it held none of them (demo world, strategy: no river or
  # same-river questions, 5 climate ones against 54 in training).
  rng.shuffle(questions)
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
  config = SyntheticConfig(**{f.name: getattr(args, f.name)
                              for f in dataclasses.fields(SyntheticConfig)})
  for path in build_embedded_communities(args.out, config):
    community = records_lib.load_community(path)
    print(f"wrote {path}\n{community.report}")


if __name__ == "__main__":
  main()
