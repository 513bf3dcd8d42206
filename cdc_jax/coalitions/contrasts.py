"""Settings against each other: paired differences of one coalition's accuracy across settings.

The seed papers' claims compare *settings*, not coalitions: label-then-CoT vs
CoT-then-label, a permuted CoT, k key tokens vs the full rationale, a privacy
eps vs none, a selection policy vs random, level 3 vs level 1. A contrast is
``acc_i(C, S) - acc_i(C, R)`` for a coalition ``C`` run in setting ``S`` and
in the reference setting ``R``, on community ``i``'s test examples. The test
examples are the same in both settings, so the bootstrap draws them once for
both (paired, :mod:`cdc_jax.coalitions.bootstrap`); seeds are drawn by index,
as for coalitions within a setting.

A random selection's draws (``random:tokens_of=<policy>:seed=N``, one per
``N``) are replicates of one policy, as training seeds are: contrasts pool them
into one setting (``random:tokens_of=<policy>``) whose runs are every (draw,
training seed), so "the policy vs random" is one difference over all of them.

    contrasts = contrast_settings(rows, examples)             # every pair of settings
    contrasts = contrast_settings(rows, examples, pairs=[(label_cot, cot_label)])
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
from typing import Mapping, Sequence

import numpy as np

from cdc_jax.coalitions import bootstrap, incentives
from cdc_jax.coalitions.bootstrap import Interval
from cdc_jax.coalitions.examples import ExampleOutcome
from cdc_jax.coalitions.incentives import Coalition, Setting
from cdc_jax.coalitions.results import RunResult


@dataclasses.dataclass(frozen=True)
class Contrast:
  """``accuracy - reference_accuracy`` of ``coalition`` on ``community``, with intervals."""
  community: str
  coalition: Coalition
  setting: Setting
  reference: Setting
  accuracy: Interval
  reference_accuracy: Interval
  difference: Interval
  seeds: int
  reference_seeds: int
  num_examples: int


_RANDOM_DRAW = re.compile(r"^(random:.*):seed=\d+$")


def pooled_setting(setting: Setting) -> Setting:
  """``setting`` with a random selection's draw dropped (draws pool); others unchanged."""
  draw = _RANDOM_DRAW.match(setting.selection or "")
  return dataclasses.replace(setting, selection=draw.group(1)) if draw else setting


def _key(setting: Setting, coalition: Coalition) -> str:
  return f"{setting} {incentives.coalition_name(coalition)}"


def contrast_settings(rows: Sequence[RunResult], examples: Mapping[str, Sequence[ExampleOutcome]],
                      *, pairs: Sequence[tuple[Setting, Setting]] | None = None,
                      resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = 0
                      ) -> list[Contrast]:
  """Paired contrasts of every coalition run in both settings of a pair.

  Args:
    rows: a sweep's results; zero-shot baselines and proportion-sweep runs are left out.
    examples: per-example outcomes by run (:func:`cdc_jax.coalitions.examples.collect_examples`).
    pairs: (setting, reference) pairs of pooled settings (:func:`pooled_setting`); None: every
      pair of the settings present, the later in :func:`incentives.setting_sort_key` order
      against the earlier.
    resamples, seed: of the bootstrap.

  Returns:
    One contrast per pair, coalition run in both settings, and member community, in pair order.

  Raises:
    ValueError: a run lacks per-example outcomes, or two settings' runs were evaluated on
      different test examples of a community (they cannot be paired), naming the run.
  """
  natural = [r for r in rows if r.baseline is None and incentives.mixture_of(r) is None]
  grouped: dict[tuple[Setting, Coalition], list[RunResult]] = collections.defaultdict(list)
  for r in natural:
    grouped[(pooled_setting(incentives.setting_of(r)), r.coalition)].append(r)
  settings = sorted({s for s, _ in grouped}, key=incentives.setting_sort_key)
  if pairs is None:
    pairs = [(later, earlier) for earlier, later in itertools.combinations(settings, 2)]
  coalitions = sorted({c for _, c in grouped}, key=lambda c: (len(c), sorted(c)))
  # (setting, reference, coalition) for each coalition run in both settings of a pair.
  wanted = [(setting, reference, c) for setting, reference in pairs for c in coalitions
            if (setting, c) in grouped and (reference, c) in grouped]
  if not wanted:
    return []
  used = {(setting, c) for setting, _, c in wanted} | {(ref, c) for _, ref, c in wanted}
  missing = sorted(run.run for key in used for run in grouped[key] if run.run not in examples)
  if missing:
    raise ValueError(f"runs without per-example outcomes: {', '.join(missing)}")
  ids: dict[str, tuple[str, ...]] = {}
  correct: dict[str, dict[str, np.ndarray]] = {}
  for setting, coalition in sorted(used, key=lambda k: (incentives.setting_sort_key(k[0]),
                                                          sorted(k[1]))):
    # Replicates: training seeds, and within a pooled random selection its draws.
    per_seed: dict[str, dict[tuple[str, int], dict[str, bool]]] = collections.defaultdict(dict)
    names = {}
    for run in grouped[(setting, coalition)]:
      replicate = (run.selection or "", run.seed)
      names[replicate] = run.run
      for o in examples[run.run]:
        per_seed[o.community].setdefault(replicate, {})[o.id] = o.correct
    key = _key(setting, coalition)
    correct[key] = {}
    for community in sorted(coalition):
      seeds = per_seed.get(community)
      if not seeds:
        raise ValueError(f"coalition {key}: no per-example outcomes on {community!r}")
      ids.setdefault(community, tuple(sorted(next(iter(seeds.values())))))
      correct[key][community] = np.stack([
          bootstrap.align(seeds[s], ids[community], what=f"run {names[s]} on {community}")
          for s in sorted(seeds)])
  boot = bootstrap.Bootstrap(bootstrap.Outcomes(ids=ids, correct=correct), resamples=resamples,
                             seed=seed)
  out = []
  for setting, reference, coalition in wanted:
    a, b = _key(setting, coalition), _key(reference, coalition)
    for community in sorted(coalition):
      acc, ref = boot.accuracy(a, community), boot.accuracy(b, community)
      out.append(Contrast(
          community=community, coalition=coalition, setting=setting, reference=reference,
          accuracy=boot.interval(acc), reference_accuracy=boot.interval(ref),
          difference=boot.interval(acc - ref), seeds=len(correct[a][community]),
          reference_seeds=len(correct[b][community]), num_examples=len(ids[community])))
  return out


def contrast_table(contrasts: Sequence[Contrast]) -> str:
  """A markdown table: community, coalition, setting, reference, accuracies and difference."""
  header = ("| community | coalition | setting | reference | accuracy | reference accuracy | "
            "difference | seeds | test examples |\n|---|---|---|---|---|---|---|---|---|")
  lines = [header]
  for c in contrasts:
    lines.append(
        f"| {c.community} | {incentives.coalition_name(c.coalition)} | {c.setting} | "
        f"{c.reference} | {bootstrap.format_interval(c.accuracy)} | "
        f"{bootstrap.format_interval(c.reference_accuracy)} | "
        f"{bootstrap.format_interval(c.difference, signed=True, mark=True)} | "
        f"{c.seeds} vs {c.reference_seeds} | {c.num_examples} |")
  return "\n".join(lines)
