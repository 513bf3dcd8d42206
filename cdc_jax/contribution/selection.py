r"""Contribution selection: which training traces a community shares under a budget.

    python -m cdc_jax.contribution.selection --community DIR --out DIR --budget_traces 100 \
        --policy learnability_gap --checkpoint MODEL_DIR --size tiny --vocab_size 1024 \
        [--reference_checkpoint STRONGER_DIR] [--gin_file gin/contribution/allocation.gin] \
        [--gin.MAX_GAP=2.0] [--spm_model VOCAB.model] [--level 6] [--format cot_label]
    python -m cdc_jax.contribution.selection --community DIR --out DIR --policy random \
        --match_tokens_of OTHER_OUT/selection.json --spm_model VOCAB.model
    python -m cdc_jax.contribution.selection --community DIR --out DIR --budget_tokens 20000 \
        --student_gin gin/models/smollm2_135m_lora.gin --checkpoint SMOLLM2.gguf --level 3

Budgets are explicit: ``--budget_traces N`` (traces kept), ``--budget_fraction F``
(a fraction in (0, 1] of the training traces), ``--budget_tokens T`` (training
tokens kept: inputs + targets of the trained format, EOS included), or
``--match_tokens_of`` another selection's kept tokens (the equal-token random
baseline). Policies (:data:`POLICIES`, :func:`register_policy`):

- ``learnability_gap`` (LaDa): the learnable band of
  :mod:`cdc_jax.contribution.allocation`, largest gap first; student reward =
  mean per-token log-likelihood of the trace's training target under the
  student, reference reward = the same under ``--reference_checkpoint`` (else
  the ceiling 0: the gap is the student's per-token loss). Thresholds: gin.
- ``heuristic``: ``w * rank(student log-likelihood) + (1 - w) * teacher
  confidence`` (:mod:`cdc_jax.contribution.heuristic`); prefers what the
  student already fits.
- ``random``: a seeded shuffle.

The budget is filled down the policy's order (ties: smaller id; tokens: first
fit). Other splits are copied unchanged. Kept records carry
``provenance["selection"] = {"policy", "budget", "of"}``; per-record scores,
bands and counts go to ``selection.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax.contribution import allocation, budgets, heuristic, rewards
from cdc_jax.contribution.allocation import GapBand
from cdc_jax.contribution.budgets import Budget, TokenCounter
from cdc_jax.contribution.rewards import Reward
from cdc_jax.data import records as records_lib

SELECTION_FILENAME = "selection.json"


# ---------------------------------------------------------------------------
# Policies.


@dataclasses.dataclass(frozen=True)
class PolicyInputs:
  """What the policies may use; each takes the fields it needs.

  Attributes:
    student: the student's reward (heuristic, learnability_gap).
    reference: the reference's reward (learnability_gap; None: ``reference_ceiling``).
    band: the learnability_gap thresholds.
    reference_ceiling: the reference reward when there is no reference model.
    weight: the heuristic's w.
    seed: the random policy's seed.
  """
  student: Reward | None = None
  reference: Reward | None = None
  band: GapBand = GapBand()
  reference_ceiling: float = 0.0
  weight: float = 0.5
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Ranking:
  """A policy's answer: eligible ids best first, per-candidate scores, a report."""
  order: tuple[str, ...]
  scores: tuple[Mapping[str, Any], ...] = ()
  report: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Policy = Callable[[Sequence[records_lib.TraceRecord], PolicyInputs], Ranking]


def _need_student(inputs: PolicyInputs, policy: str) -> Reward:
  if inputs.student is None:
    raise ValueError(f"the {policy} policy needs the student's reward (PolicyInputs.student)")
  return inputs.student


def heuristic_policy(records: Sequence[records_lib.TraceRecord],
                     inputs: PolicyInputs) -> Ranking:
  """Every record, by the heuristic score (ties: smaller id)."""
  scores = heuristic.score_traces(records, learnability=_need_student(inputs, "heuristic"),
                                  weight=inputs.weight)
  order = tuple(s.id for s in sorted(scores, key=lambda s: (-s.score, s.id)))
  return Ranking(order, tuple(dataclasses.asdict(s) for s in scores), {"weight": inputs.weight})


def learnability_gap_policy(records: Sequence[records_lib.TraceRecord],
                            inputs: PolicyInputs) -> Ranking:
  """The learnable band only, largest gap first; the report has bands and the reverse direction."""
  student = rewards.reward_values(_need_student(inputs, "learnability_gap"), records, "student")
  reference = (None if inputs.reference is None
               else rewards.reward_values(inputs.reference, records, "reference"))
  gaps = allocation.gap_scores(records, student=student, reference=reference, band=inputs.band,
                               reference_ceiling=inputs.reference_ceiling)
  report = {"band": dataclasses.asdict(inputs.band), **allocation.gap_report(gaps),
            "reference": "model" if reference is not None else
                         f"ceiling={inputs.reference_ceiling:g}"}
  return Ranking(tuple(allocation.learnable_order(gaps)),
                 tuple(dataclasses.asdict(g) for g in gaps), report)


def random_policy(records: Sequence[records_lib.TraceRecord], inputs: PolicyInputs) -> Ranking:
  """Every record in a seeded random order."""
  order = [r.id for r in records]
  random.Random(inputs.seed).shuffle(order)
  return Ranking(tuple(order), (), {"seed": inputs.seed})


POLICIES: dict[str, Policy] = {}


def register_policy(name: str, policy: Policy) -> None:
  """Adds a policy under ``name``; a duplicate name raises."""
  if name in POLICIES:
    raise ValueError(f"selection policy {name!r} is already registered")
  POLICIES[name] = policy


register_policy("learnability_gap", learnability_gap_policy)
register_policy("heuristic", heuristic_policy)
register_policy("random", random_policy)


def get_policy(name: str) -> Policy:
  """The registered policy ``name`` (unknown: an error listing the registered ones)."""
  if name not in POLICIES:
    raise ValueError(f"unknown selection policy {name!r}: expected one of {sorted(POLICIES)}")
  return POLICIES[name]


@dataclasses.dataclass(frozen=True)
class Selection:
  """The records a policy kept under a budget, in their original order."""
  records: tuple[records_lib.TraceRecord, ...]
  ranking: Ranking
  kept_tokens: int | None
  tokens: Mapping[str, int] | None


def select(records: Sequence[records_lib.TraceRecord], *, policy: str, budget: Budget,
           inputs: PolicyInputs = PolicyInputs(),
           count_tokens: TokenCounter | None = None) -> Selection:
  """Ranks ``records`` with ``policy`` and keeps the best that fit ``budget``."""
  rank = get_policy(policy)
  tokens = None if count_tokens is None else budgets.token_counts(records, count_tokens)
  ranking = rank(records, inputs)
  keep = set(budgets.take_within_budget(ranking.order, budget, total=len(records),
                                        tokens=tokens))
  chosen = tuple(r for r in records if r.id in keep)
  kept_tokens = None if tokens is None else sum(tokens[r.id] for r in chosen)
  return Selection(chosen, ranking, kept_tokens, tokens)


def matched_token_budget(summary: Mapping[str, Any]) -> Budget:
  """The token budget a selection actually used (``selection.json``): the equal-token baseline."""
  kept = summary.get("kept_tokens")
  if kept == 0:
    raise ValueError(f"the selection of {summary.get('source', '?')} kept no traces: there is no "
                     "token budget to match (widen its band or budget)")
  if not isinstance(kept, int) or kept < 1:
    raise ValueError(f"selection summary of {summary.get('source', '?')} has no kept_tokens "
                     f"(got {kept!r}): select it with a token counter (--spm_model or a model)")
  return Budget(tokens=kept)


def selection_name(policy: str, budget: Budget) -> str:
  """The ``selection`` a run on the selected data records, e.g. 'learnability_gap:tokens=20000'."""
  return f"{policy}:{budget.name}"


def write_selection(source: str | os.PathLike, out_dir: str | os.PathLike, *, policy: str,
                    budget: Budget, inputs: PolicyInputs = PolicyInputs(),
                    count_tokens: TokenCounter | None = None, split: str = "train",
                    notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes the community at ``source`` with only the selected ``split`` records.

  Returns the summary also written to ``<out_dir>/selection.json``: policy,
  budget, counts (records and, with ``count_tokens``, tokens), the policy's
  report, per-record scores and ``notes`` (e.g. how tokens were counted).
  """
  if not isinstance(budget, Budget):
    raise TypeError(f"budget must be a selection.Budget (traces=, fraction= or tokens=), "
                    f"got {budget!r}")
  get_policy(policy)
  community = records_lib.load_community(source)
  if split not in community.records:
    raise ValueError(f"{community.directory}: no split {split!r}")
  candidates = list(community.records[split])
  marked = [r.id for r in candidates if "selection" in r.provenance]
  if marked:
    raise ValueError(f"{community.directory}: records {marked[:5]} were already selected; "
                     "select from the unselected community")
  chosen = select(candidates, policy=policy, budget=budget, inputs=inputs,
                  count_tokens=count_tokens)
  note = {"policy": policy, "budget": budget.name, "of": len(candidates)}
  if policy == "random":
    note["seed"] = inputs.seed
  records = dict(community.records)
  records[split] = [dataclasses.replace(r, provenance=dict(r.provenance, selection=note))
                    for r in chosen.records]
  manifest = dataclasses.replace(
      community.manifest, description=f"{community.manifest.description} [{split}: "
      f"{len(chosen.records)} of {len(candidates)} traces, {policy} selection]")
  out_dir = Path(out_dir)
  records_lib.write_community(out_dir, manifest, records)
  summary = {**(notes or {}), **note, "source": str(community.directory), "split": split,
             "selected": [r.id for r in chosen.records], "kept_tokens": chosen.kept_tokens,
             "of_tokens": None if chosen.tokens is None else sum(chosen.tokens.values()),
             "report": dict(chosen.ranking.report), "scores": list(chosen.ranking.scores)}
  io_lib.atomic_write_text(out_dir / SELECTION_FILENAME,
                                json.dumps(summary, indent=1, sort_keys=True) + "\n")
  return summary


# ---------------------------------------------------------------------------
# Command line.

_OLD_BUDGET = ("--budget was removed: a bare number was read as a count or a fraction by its "
               "form ('1' kept every trace). Say --budget_traces N (traces kept), "
               "--budget_fraction F (a fraction in (0, 1] of the training traces), "
               "--budget_tokens T (training tokens kept) or --match_tokens_of SELECTION_JSON")


def _parser() -> argparse.ArgumentParser:
  from cdc_jax import config_cli

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
  config_cli.add_gin_flags(parser)
  parser.add_argument("--community", type=Path, required=True)
  parser.add_argument("--out", type=Path, required=True)
  budget = parser.add_mutually_exclusive_group()
  budget.add_argument("--budget_traces", type=int, help="training traces kept")
  budget.add_argument("--budget_fraction", type=float,
                      help="fraction in (0, 1] of the training traces kept")
  budget.add_argument("--budget_tokens", type=int,
                      help="training tokens kept (inputs + targets with EOS; needs a vocabulary)")
  budget.add_argument("--match_tokens_of", type=Path,
                      help="the kept tokens of another selection.json (equal-token baseline)")
  parser.add_argument("--budget", help=argparse.SUPPRESS)
  parser.add_argument("--policy", default="learnability_gap",
                      help=f"one of {sorted(POLICIES)}")
  parser.add_argument("--weight", type=float, default=0.5, help="heuristic: w of learnability")
  parser.add_argument("--seed", type=int, default=0, help="random: the shuffle's seed")
  parser.add_argument("--checkpoint", help="the current student (heuristic, learnability_gap): "
                      "a cdc checkpoint or a HF T5 directory; with --student_gin also the base "
                      "weights (GGUF or HF directory) of a LoRA student")
  parser.add_argument("--student_gin", action="append", default=[],
                      help="gin file defining the student as MODEL with its VOCABULARY "
                      "(repeatable; e.g. gin/models/smollm2_135m_lora.gin): traces are scored and "
                      "counted in its tasks' prompt; replaces --size/--version/--vocab_size/"
                      "--spm_model, and a reference checkpoint must fit the same model")
  parser.add_argument("--size", default="tiny", help="the student's T5 size")
  parser.add_argument("--version", default="1.1", help="the student's T5 version")
  parser.add_argument("--vocab_size", type=int, default=1024, help="the student's embedding rows")
  parser.add_argument("--reference_checkpoint",
                      help="learnability_gap: a stronger model with the same vocabulary")
  parser.add_argument("--reference_size", help="its T5 size (default: --size)")
  parser.add_argument("--reference_version", help="its T5 version (default: --version)")
  parser.add_argument("--reference_vocab_size", type=int, help="its rows (default: --vocab_size)")
  parser.add_argument("--reference_ceiling", type=float, default=0.0,
                      help="reference reward without a reference model (0: a perfect fit)")
  parser.add_argument("--spm_model", help="the SentencePiece model (default: the catalog's)")
  parser.add_argument("--level", type=int, default=6)
  parser.add_argument("--format", default="cot_label")
  return parser


def _budget(parser: argparse.ArgumentParser, args: argparse.Namespace,
            counted_as: Mapping[str, Any]) -> Budget:
  if args.budget is not None:
    parser.error(_OLD_BUDGET)
  try:
    if args.match_tokens_of is not None:
      other = json.loads(args.match_tokens_of.read_text())
      if other.get("tokens_counted_as") != counted_as:
        parser.error(f"{args.match_tokens_of} counted tokens as {other.get('tokens_counted_as')}, "
                     f"this selection counts them as {counted_as}: give the same --spm_model, "
                     "--level and --format")
      return matched_token_budget(other)
    return Budget(traces=args.budget_traces, fraction=args.budget_fraction,
                  tokens=args.budget_tokens)
  except (ValueError, OSError) as e:
    parser.error(f"{args.match_tokens_of}: {e}" if args.match_tokens_of else str(e))


STUDENT_GIN = "gin/contribution/selection_student.gin"


def gin_student(model=None, vocabulary=None, options=None) -> tuple[Any, Any, Any]:
  """(model, vocabulary, task options) as ``STUDENT_GIN`` binds them from a model gin."""
  return model, vocabulary, options


def _configure(args: argparse.Namespace, bindings: Sequence[str]) -> tuple[GapBand, tuple | None]:
  """The GapBand bound by the gin files and bindings (defaults without any) and, with
  ``--student_gin``, the student's (model, vocabulary, task options)."""
  student_files = [*args.student_gin, STUDENT_GIN] if args.student_gin else []
  if not args.gin_file and not bindings and not student_files:
    return GapBand(), None
  from cdc_jax import config_cli

  config_cli.parse_gin([*student_files, *args.gin_file], bindings, args.gin_search_path)
  band = config_cli.configured("cdc_jax.contribution.allocation", "GapBand")()
  if not student_files:
    return band, None
  return band, config_cli.configured("cdc_jax.contribution.selection", "gin_student")()


def _vocabulary(spm_model: str | None):
  from cdc_jax.tasks import catalog, vocabulary

  if spm_model:
    return vocabulary.load_vocabulary(spm_model)
  catalog.register_tasks()
  return catalog.process_vocabulary()


def _model_reward(args: argparse.Namespace, vocab, checkpoint: str, *, reference: bool,
                  student: tuple | None) -> Reward:
  if student is not None:
    model, _, options = student
    return rewards.model_log_likelihood(model=model, vocabulary=vocab, checkpoint=checkpoint,
                                        level=args.level, fmt=args.format, options=options)
  from cdc_jax.models.encoder_decoder import build_model
  from cdc_jax.models.t5_config import t5_config

  size, version, vocab_size = args.size, args.version, args.vocab_size
  if reference:
    size, version = args.reference_size or size, args.reference_version or version
    vocab_size = args.reference_vocab_size or vocab_size
  model = build_model(t5_config(size, version=version, vocab_size=vocab_size, dropout_rate=0.0))
  return rewards.model_log_likelihood(model=model, vocabulary=vocab, checkpoint=checkpoint,
                                      level=args.level, fmt=args.format)


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  from cdc_jax import config_cli

  bindings, rest = config_cli.split_gin_bindings(list(sys.argv[1:] if argv is None else argv))
  parser = _parser()
  args = parser.parse_args(rest)
  vocabulary_name = ",".join(args.student_gin) or args.spm_model or "catalog"
  counted_as = {"vocabulary": vocabulary_name, "level": args.level, "format": args.format}
  budget = _budget(parser, args, counted_as)
  if args.policy not in POLICIES:
    parser.error(f"unknown --policy {args.policy!r}: expected one of {sorted(POLICIES)}")
  needs_student = args.policy in ("heuristic", "learnability_gap")
  if needs_student and not args.checkpoint:
    parser.error(f"--policy {args.policy} needs --checkpoint (the current student)")
  if args.student_gin and args.spm_model:
    parser.error("--student_gin brings its own vocabulary: leave out --spm_model")
  band, student = _configure(args, bindings)
  vocab, options = None, None
  if student is not None:
    _, vocab, options = student
  elif needs_student or budget.tokens is not None or args.spm_model:
    vocab = _vocabulary(args.spm_model)
  inputs = PolicyInputs(
      student=_model_reward(args, vocab, args.checkpoint, reference=False, student=student)
      if needs_student else None,
      reference=_model_reward(args, vocab, args.reference_checkpoint, reference=True,
                              student=student)
      if needs_student and args.reference_checkpoint else None,
      band=band, reference_ceiling=args.reference_ceiling, weight=args.weight, seed=args.seed)
  counter = (None if vocab is None
             else rewards.vocabulary_token_counter(vocab, level=args.level, fmt=args.format,
                                                   options=options))
  summary = write_selection(args.community, args.out, policy=args.policy, budget=budget,
                            inputs=inputs, count_tokens=counter,
                            notes={"tokens_counted_as": counted_as if counter else None})
  tokens = ("" if summary["kept_tokens"] is None
            else f", {summary['kept_tokens']} of {summary['of_tokens']} tokens")
  bands, lacks = summary["report"].get("bands"), summary["report"].get("teacher_lacks")
  print(f"kept {len(summary['selected'])} of {summary['of']} traces{tokens} ({args.policy}, "
        f"budget {budget.name}){f'; bands {bands}' if bands else ''}"
        f"{'' if lacks is None else f'; {len(lacks)} carry knowledge the reference lacks'}; "
        f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
