r"""Learnability-aware contribution: which traces a community shares under a budget.

    python -m cdc_jax.contribution.selection --community DIR --out DIR --budget 100 \
        --policy learnability --checkpoint MODEL_DIR --size tiny --vocab_size 1024 \
        [--version 1.1] [--spm_model VOCAB.model] [--level 6] [--format cot_label]
    python -m cdc_jax.contribution.selection --community DIR --out DIR --budget 100 --policy random

Each training trace r gets

    score(r) = w * L(r) + (1 - w) * U(r)          (w = ``weight``, default 0.5)

**Learnability** L: the mean per-token log-likelihood of r's training target
(format ``fmt`` at ``level``) under the current student, turned into its rank
within the community scaled to [0, 1] (1 = the most learnable; ties share a
rank), so it is on U's scale whatever the loss values. **Usefulness** U:
the teacher's confidence, the mean of the components that are known:
``correct`` (1 if ``teacher_answer`` matches the gold answer, 0 if not) and
``agreement`` (the fraction of r's rationale levels that support the gold
answer: for numbers the rationale's last number equals it, for text and
choices the normalised answer occurs in it; boolean rationales do not state
an answer and are not counted); U = 0.5 when neither is known.

The ``budget`` highest-scoring traces are kept (ties: smaller id first); the
``random`` policy keeps a seeded sample of the same size. Other splits are
copied unchanged. Kept records carry ``provenance["selection"] = {"policy",
"budget", "of"}``; per-record scores go to ``selection.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cdc_jax import answers as answers_lib
from cdc_jax.data import records as records_lib

POLICIES = ("learnability", "random")
SELECTION_FILENAME = "selection.json"
Learnability = Callable[[Sequence[records_lib.TraceRecord]], Sequence[float]]
"""``learnability(records) -> values``, higher = more learnable (e.g. mean token log-likelihood)."""


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


def score_traces(records: Sequence[records_lib.TraceRecord], *, learnability: Learnability,
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


def _budget(budget: int | float, total: int) -> int:
  if isinstance(budget, bool) or budget <= 0:
    raise ValueError(f"budget must be a positive count or a fraction in (0, 1], got {budget!r}")
  if isinstance(budget, float) and budget <= 1:
    return max(1, round(budget * total))
  return min(int(budget), total)


def select_by_score(records: Sequence[records_lib.TraceRecord], scores: Sequence[TraceScore], *,
                    budget: int | float) -> list[records_lib.TraceRecord]:
  """The ``budget`` highest-scoring records (ties: smaller id), in their original order."""
  by_id = {s.id: s.score for s in scores}
  keep = set(sorted(by_id, key=lambda i: (-by_id[i], i))[:_budget(budget, len(records))])
  return [r for r in records if r.id in keep]


def select_random(records: Sequence[records_lib.TraceRecord], *, budget: int | float,
                  seed: int = 0) -> list[records_lib.TraceRecord]:
  """A seeded random sample of ``budget`` records, in their original order."""
  keep = set(random.Random(seed).sample([r.id for r in records], _budget(budget, len(records))))
  return [r for r in records if r.id in keep]


def selection_name(policy: str, budget: int | float) -> str:
  """The ``selection`` a run on the selected data records, e.g. 'learnability:budget=100'."""
  return f"{policy}:budget={budget:g}"


def write_selection(source: str | os.PathLike, out_dir: str | os.PathLike, *, policy: str,
                    budget: int | float, learnability: Learnability | None = None,
                    weight: float = 0.5, seed: int = 0, split: str = "train") -> dict[str, Any]:
  """Writes the community at ``source`` with only the selected ``split`` records.

  Returns the summary also written to ``<out_dir>/selection.json`` (policy,
  budget, counts, and per-record scores for 'learnability').
  """
  if policy not in POLICIES:
    raise ValueError(f"unknown selection policy {policy!r}: expected one of {POLICIES}")
  community = records_lib.load_community(source)
  if split not in community.records:
    raise ValueError(f"{community.directory}: no split {split!r}")
  candidates = list(community.records[split])
  marked = [r.id for r in candidates if "selection" in r.provenance]
  if marked:
    raise ValueError(f"{community.directory}: records {marked[:5]} were already selected; "
                     "select from the unselected community")
  scores: list[TraceScore] = []
  if policy == "learnability":
    if learnability is None:
      raise ValueError("the learnability policy needs a learnability scorer")
    scores = score_traces(candidates, learnability=learnability, weight=weight)
    chosen = select_by_score(candidates, scores, budget=budget)
  else:
    chosen = select_random(candidates, budget=budget, seed=seed)
  note = {"policy": policy, "budget": budget, "of": len(candidates)}
  if policy == "random":
    note["seed"] = seed
  records = dict(community.records)
  records[split] = [dataclasses.replace(r, provenance=dict(r.provenance, selection=note))
                    for r in chosen]
  manifest = dataclasses.replace(
      community.manifest, description=f"{community.manifest.description} [{split}: "
      f"{len(chosen)} of {len(candidates)} traces, {policy} selection]")
  out_dir = Path(out_dir)
  records_lib.write_community(out_dir, manifest, records)
  summary = {**note, "source": str(community.directory), "split": split, "weight": weight,
             "selected": [r.id for r in chosen],
             "scores": [dataclasses.asdict(s) for s in scores]}
  records_lib.atomic_write_text(out_dir / SELECTION_FILENAME,
                                json.dumps(summary, indent=1, sort_keys=True) + "\n")
  return summary


# ---------------------------------------------------------------------------
# The student's learnability.


def student_learnability(*, model, vocabulary, params: Any | None = None,
                         checkpoint: str | os.PathLike | None = None, level: int = 6,
                         fmt: str = "cot_label", input_length: int = 128,
                         target_length: int = 128, batch_size: int = 32) -> Learnability:
  """Mean per-token log-likelihood of each record's training target under a student.

  Targets are rendered as the training task ``cdc.<c>.L<level>.<fmt>``
  renders them (step_by_step: its explain part), tokenized with ``vocabulary``
  plus EOS and truncated to the lengths; scored with
  :meth:`EncoderDecoderModel.score_batch` in fixed-size batches.
  """
  import jax

  from cdc_jax.tasks import formats

  if (params is None) == (checkpoint is None):
    raise ValueError("give exactly one of params= or checkpoint=")
  if params is None:
    from cdc_jax import checkpoints

    params, _ = checkpoints.restore_params(checkpoint)
  score = jax.jit(model.score_batch)
  part = "explain" if fmt == "step_by_step" else None

  def encode(text: str, length: int) -> list[int]:
    return (list(vocabulary.encode(text)) if text.strip() else [])[:length - 1] + [1]

  def learnability(records: Sequence[records_lib.TraceRecord]) -> list[float]:
    out: list[float] = []
    for start in range(0, len(records), batch_size):
      chunk = records[start:start + batch_size]
      inputs = np.zeros((batch_size, input_length), np.int32)
      targets = np.zeros((batch_size, target_length), np.int32)
      for row, record in enumerate(chunk):
        example = formats.render_example(
            fmt=fmt, part=part, question=record.question, answer=record.answer,
            rationale=record.rationales.get(level), choices=record.choices,
            example_id=record.id)
        ids = encode(example["inputs"], input_length)
        inputs[row, :len(ids)] = ids
        ids = encode(example["targets"], target_length)
        targets[row, :len(ids)] = ids
      totals = np.asarray(score(params, {"encoder_input_tokens": inputs,
                                         "decoder_target_tokens": targets}))
      counts = np.count_nonzero(targets, axis=1)
      out.extend((totals[:len(chunk)] / counts[:len(chunk)]).tolist())
    return out

  return learnability


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--community", type=Path, required=True)
  parser.add_argument("--out", type=Path, required=True)
  parser.add_argument("--budget", type=float, required=True,
                      help="traces kept: a count, or a fraction in (0, 1]")
  parser.add_argument("--policy", choices=POLICIES, default="learnability")
  parser.add_argument("--weight", type=float, default=0.5, help="w of learnability")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--checkpoint", help="the current student (learnability policy)")
  parser.add_argument("--size", default="tiny", help="the student's T5 size")
  parser.add_argument("--version", default="1.1", help="the student's T5 version")
  parser.add_argument("--vocab_size", type=int, default=1024, help="the student's embedding rows")
  parser.add_argument("--spm_model", help="its SentencePiece model (default: the catalog's)")
  parser.add_argument("--level", type=int, default=6)
  parser.add_argument("--format", default="cot_label")
  args = parser.parse_args(argv)
  budget: int | float = int(args.budget) if args.budget > 1 else args.budget
  learnability = None
  if args.policy == "learnability":
    if not args.checkpoint:
      parser.error("--policy learnability needs --checkpoint")
    from cdc_jax.models.encoder_decoder import build_model
    from cdc_jax.models.t5_config import t5_config
    from cdc_jax.tasks import catalog, vocabulary

    if args.spm_model:
      vocab = vocabulary.load_vocabulary(args.spm_model)
    else:
      catalog.register_tasks()
      vocab = catalog.process_vocabulary()
    model = build_model(t5_config(args.size, version=args.version, vocab_size=args.vocab_size,
                                  dropout_rate=0.0))
    learnability = student_learnability(model=model, vocabulary=vocab, checkpoint=args.checkpoint,
                                        level=args.level, fmt=args.format)
  summary = write_selection(args.community, args.out, policy=args.policy, budget=budget,
                            learnability=learnability, weight=args.weight, seed=args.seed)
  print(f"kept {len(summary['selected'])} of {summary['of']} traces ({args.policy}); "
        f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
