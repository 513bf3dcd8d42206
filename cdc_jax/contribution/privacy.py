r"""Prompt privacy: a word-level exponential mechanism over the teacher's embeddings.

    python -m cdc_jax.contribution.privacy --community DIR --out DIR --eps 40 \
        [--mechanism exponential|adaptive] [--seed 0] [--splits train]
    python -m cdc_jax.contribution.privacy --text "Is the Arno longer than the Thames?" --eps 40

Each word of a question (a maximal run of two or more letters; digits,
punctuation, one-letter words and whitespace pass through) is replaced by a
word t' of the candidate vocabulary (:mod:`cdc_jax.contribution.embeddings`)
sampled with probability

    P(t' | t) = exp(eps_t * u(t, t') / (2 du)) / sum_s exp(eps_t * u(t, s) / (2 du)),

u = cosine similarity of the two embeddings, du = 2 its sensitivity (u lies
in [-1, 1], so u(t, s) - u(t2, s) <= 2 for any inputs t, t2). Each word's
replacement is then eps_t-DP: P(t'|t) / P(t'|t2) <= e^eps_t for every pair of
input words. ``exponential`` gives every word eps_t = eps; ``adaptive``
spends the same total budget per question (mean eps_t = eps over the sampled
words) unevenly:
weight 0.5 for stopwords, 2 for words of the record's answer-bearing context
(its answer and shortest rationale), 1 otherwise; eps_t = eps * n * w_t / sum(w).
A question of n words is (n * eps)-DP by composition under 'exponential';
under 'adaptive' each word is eps_t-DP given the allocation, which itself
depends on the words' classes and is not privatised (docs/contribution_controls.md).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cdc_jax import io as io_lib
from cdc_jax.contribution import embeddings as embeddings_lib
from cdc_jax.data import records as records_lib

MECHANISMS = ("exponential", "adaptive")
SENSITIVITY = 2.0  # of cosine similarity, which lies in [-1, 1]
PRIVACY_FILENAME = "privacy.json"
_WORD = re.compile(r"(?<!\w)[^\W\d_]{2,}(?!\w)")
STOPWORDS = frozenset(
    "a an the is are was were be been being of in on at to for with by and or so than then that "
    "this these those it its they their there which who whom whose what when where why how many "
    "much do does did has have had not no from as into about if would could should can will".split())
ADAPTIVE_WEIGHTS = {"stopword": 0.5, "context": 2.0, "other": 1.0}


@dataclasses.dataclass(frozen=True)
class PerturbStats:
  """What perturbing one text did.

  Attributes:
    eps: the mean per-word budget asked for.
    mechanism: 'exponential' or 'adaptive'.
    words: word units found.
    sampled: words replaced by a sample of the mechanism.
    kept: sampled words whose sample is the word itself.
    passed: words without an embedding, passed through unchanged.
    budgets: eps of each sampled word, in order.
  """
  eps: float
  mechanism: str
  words: int
  sampled: int
  kept: int
  passed: int
  budgets: tuple[float, ...]

  @property
  def kept_fraction(self) -> float:
    """Fraction of sampled words left unchanged (NaN if none were sampled)."""
    return self.kept / self.sampled if self.sampled else float("nan")


def check_mechanism(mechanism: str, eps: float) -> None:
  """Raises for an unknown mechanism or a budget that is not a positive finite number."""
  if mechanism not in MECHANISMS:
    raise ValueError(f"unknown privacy mechanism {mechanism!r}: expected one of {MECHANISMS}")
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
    raise ValueError(f"eps must be a positive finite number, got {eps!r}")


def exponential_probabilities(similarities: np.ndarray, eps: float, *,
                              sensitivity: float = SENSITIVITY) -> np.ndarray:
  """P(candidate) ∝ exp(eps * u / (2 * sensitivity)) for utilities ``similarities``."""
  logits = eps * np.asarray(similarities, np.float64) / (2.0 * sensitivity)
  weights = np.exp(logits - logits.max())
  return weights / weights.sum()


def word_budgets(words: Sequence[str], *, eps: float, mechanism: str,
                 context: str | None = None) -> list[float]:
  """Per-word eps: ``eps`` each ('exponential'), or reweighted with mean ``eps`` ('adaptive')."""
  check_mechanism(mechanism, eps)
  if mechanism == "exponential" or not words:
    return [float(eps)] * len(words)
  context_words = {w.lower() for w in _WORD.findall(context or "")} - STOPWORDS
  weights = [ADAPTIVE_WEIGHTS["stopword"] if w.lower() in STOPWORDS else
             ADAPTIVE_WEIGHTS["context"] if w.lower() in context_words else
             ADAPTIVE_WEIGHTS["other"] for w in words]
  scale = eps * len(words) / sum(weights)
  return [w * scale for w in weights]


def _default_embeddings() -> embeddings_lib.WordEmbeddings:
  return embeddings_lib.teacher_word_embeddings()


def perturb_question(text: str, *, eps: float, mechanism: str = "exponential",
                     rng: np.random.Generator,
                     embeddings: embeddings_lib.WordEmbeddings | None = None,
                     context: str | None = None,
                     sensitivity: float = SENSITIVITY) -> tuple[str, PerturbStats]:
  """``text`` with each word replaced by the mechanism's sample, and what happened.

  Args:
    text: the question.
    eps: per-word budget (its mean, for 'adaptive').
    mechanism: 'exponential' (uniform budget) or 'adaptive'.
    rng: the sampling generator.
    embeddings: default the SmolLM2 teacher's (loaded once per process).
    context: 'adaptive' only: text whose words are answer-bearing.
    sensitivity: du of the utility; 2 for cosine similarity.
  """
  check_mechanism(mechanism, eps)
  embeddings = embeddings if embeddings is not None else _default_embeddings()
  matches = list(_WORD.finditer(text))
  similarities = [embeddings.similarities(m.group()) for m in matches]
  # Only sampled words share the budget: a word without an embedding is published as is.
  sampled_words = [m.group() for m, s in zip(matches, similarities) if s is not None]
  budgets = iter(word_budgets(sampled_words, eps=eps, mechanism=mechanism, context=context))
  pieces, last, used = [], 0, []
  kept = 0
  for match, sims in zip(matches, similarities):
    word = replacement = match.group()
    if sims is not None:
      budget = next(budgets)
      probs = exponential_probabilities(sims, budget, sensitivity=sensitivity)
      replacement = embeddings.words[int(rng.choice(len(probs), p=probs))]
      kept += replacement == word
      used.append(round(budget, 6))
    pieces += [text[last:match.start()], replacement]
    last = match.end()
  pieces.append(text[last:])
  sampled, passed = len(sampled_words), len(matches) - len(sampled_words)
  stats = PerturbStats(eps=float(eps), mechanism=mechanism, words=len(matches), sampled=sampled,
                       kept=kept, passed=passed, budgets=tuple(used))
  return "".join(pieces), stats


# ---------------------------------------------------------------------------
# Records and communities.


def privacy_provenance(*, eps: float, mechanism: str, embeddings_source: str) -> dict[str, Any]:
  """The ``provenance["privacy"]`` object of a record whose question was perturbed.

  Producers that perturb questions themselves (e.g. before the teacher sees
  them) record the same object.
  """
  check_mechanism(mechanism, eps)
  return {"eps": float(eps), "mechanism": mechanism, "embeddings": embeddings_source,
          "field": "question"}


def record_rng(record: records_lib.TraceRecord, seed: int) -> np.random.Generator:
  """A generator for one record: the same record and seed sample the same noise.

  Independent of eps, so budgets are compared on common random numbers.
  """
  digest = hashlib.sha256(f"{seed}:{record.community}:{record.id}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def answer_context(record: records_lib.TraceRecord) -> str:
  """The answer-bearing context of the adaptive rule: answer + shortest rationale."""
  rationale = record.rationales[min(record.rationales)] if record.rationales else ""
  return f"{record.answer} {rationale}"


def perturb_record(record: records_lib.TraceRecord, *, eps: float, mechanism: str, seed: int = 0,
                   embeddings: embeddings_lib.WordEmbeddings | None = None,
                   ) -> tuple[records_lib.TraceRecord, PerturbStats]:
  """The record with its question perturbed and ``provenance["privacy"]`` set."""
  if "privacy" in record.provenance:
    raise ValueError(f"record {record.community}/{record.id} was already perturbed "
                     f"({record.provenance['privacy']}); budgets do not stack silently")
  embeddings = embeddings if embeddings is not None else _default_embeddings()
  question, stats = perturb_question(record.question, eps=eps, mechanism=mechanism,
                                     rng=record_rng(record, seed), embeddings=embeddings,
                                     context=answer_context(record))
  provenance = dict(record.provenance, privacy=privacy_provenance(
      eps=eps, mechanism=mechanism, embeddings_source=embeddings.source))
  return dataclasses.replace(record, question=question, provenance=provenance), stats


def community_fingerprint(community: records_lib.Community) -> str:
  """A content hash of a community's manifest and records."""
  digest = hashlib.sha256(json.dumps(community.manifest.to_json(), sort_keys=True).encode())
  for split in sorted(community.records):
    digest.update(records_lib.records_to_jsonl(community.records[split]).encode())
  return digest.hexdigest()


def perturb_community(source: str | os.PathLike, out_dir: str | os.PathLike, *, eps: float,
                      mechanism: str = "exponential", seed: int = 0,
                      splits: Sequence[str] = ("train",),
                      embeddings: embeddings_lib.WordEmbeddings | None = None) -> dict[str, Any]:
  """Writes a copy of a community with the questions of ``splits`` perturbed.

  Other splits are copied unchanged (test questions measure the service to
  the community's real questions). The community keeps its name, so results
  line up with the non-private runs. Returns the summary that is also
  written to ``<out_dir>/privacy.json`` (parameters, source hash, counts).
  """
  check_mechanism(mechanism, eps)
  community = records_lib.load_community(source)
  unknown = sorted(set(splits) - set(community.records))
  if unknown:
    raise ValueError(f"{community.directory}: no split(s) {unknown}; it has "
                     f"{sorted(community.records)}")
  embeddings = embeddings if embeddings is not None else _default_embeddings()
  counts: dict[str, collections.Counter] = {}
  out_records = {}
  for split, recs in community.records.items():
    if split not in splits:
      out_records[split] = recs
      continue
    counter = counts.setdefault(split, collections.Counter())
    out_records[split] = []
    for record in recs:
      perturbed, stats = perturb_record(record, eps=eps, mechanism=mechanism, seed=seed,
                                        embeddings=embeddings)
      out_records[split].append(perturbed)
      counter.update(records=1, words=stats.words, sampled=stats.sampled, kept=stats.kept,
                     passed=stats.passed, changed=int(perturbed.question != record.question))
  manifest = dataclasses.replace(
      community.manifest, description=f"{community.manifest.description} [questions of "
      f"{', '.join(splits)} perturbed: {mechanism} eps={eps:g}]")
  summary = {"source": str(community.directory), "source_sha256": community_fingerprint(community),
             **privacy_provenance(eps=eps, mechanism=mechanism,
                                  embeddings_source=embeddings.source),
             "seed": seed, "splits": list(splits),
             "counts": {s: dict(sorted(c.items())) for s, c in counts.items()}}
  out_dir = Path(out_dir)
  records_lib.write_community(out_dir, manifest, out_records)
  io_lib.atomic_write_text(out_dir / PRIVACY_FILENAME,
                                json.dumps(summary, indent=2, sort_keys=True) + "\n")
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--community", type=Path, help="community directory to perturb")
  source.add_argument("--text", help="perturb one text and print it")
  parser.add_argument("--out", type=Path, help="output community directory (with --community)")
  parser.add_argument("--eps", type=float, required=True, help="per-word privacy budget")
  parser.add_argument("--mechanism", choices=MECHANISMS, default="exponential")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--splits", default="train", help="comma-separated splits to perturb")
  parser.add_argument("--num_candidates", type=int, default=embeddings_lib.DEFAULT_NUM_CANDIDATES)
  parser.add_argument("--samples", type=int, default=3, help="with --text: samples to print")
  args = parser.parse_args(argv)
  embeddings = embeddings_lib.teacher_word_embeddings(num_candidates=args.num_candidates)
  if args.text is not None:
    rng = np.random.default_rng(args.seed)
    for _ in range(args.samples):
      text, stats = perturb_question(args.text, eps=args.eps, mechanism=args.mechanism, rng=rng,
                                     embeddings=embeddings)
      print(f"{text}    [{stats.kept}/{stats.sampled} words kept]")
    return 0
  if args.out is None:
    parser.error("--community needs --out")
  summary = perturb_community(args.community, args.out, eps=args.eps, mechanism=args.mechanism,
                              seed=args.seed, splits=args.splits.split(","),
                              embeddings=embeddings)
  for split, counts in summary["counts"].items():
    print(f"{split}: {counts['records']} records, {counts['changed']} questions changed; "
          f"{counts['kept']} of {counts['sampled']} sampled words kept, {counts['passed']} "
          f"passed through")
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
