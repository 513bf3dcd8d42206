"""Sweeps: a grid of coalition experiments, run locally by N workers or on a cluster.

:class:`SweepSpec` is the grid (coalitions x levels x formats x seeds, pair
proportions, privacy budgets, a zero-shot baseline); :func:`run_sweep` prepares
one directory per run and runs the unfinished ones with
:mod:`cdc_jax.coalitions.runner`. Run it as

    python -m cdc_jax.sweep --gin_file=gin/sweeps/embedded_demo.gin \
        --gin.SWEEP_DIR="'/tmp/sweep'" [--workers=2] [--dry_run]

Each run gets a directory named by its id; one with ``result.json`` is done
and skipped when the sweep is re-run, an interrupted one resumes from its
last checkpoint. ``dry_run`` prepares the run directories and prints one command per run
(also in ``commands.txt``: what the ``launch/`` scripts submit as one job each). A failed run is
reported with the tail of its log and does not stop the others. At the end the sweep writes
``results.jsonl``, ``results.csv`` and ``examples.jsonl`` over all finished runs.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Mapping, Sequence

from cdc_jax import names
from cdc_jax.coalitions import experiment, results, runner


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """A grid of coalition experiments.

  Attributes:
    communities: the communities of the sweep.
    coalition_sizes: which coalition sizes to run (all coalitions of those
      sizes); empty means every non-empty coalition (2^K - 1, as Shapley
      values need).
    coalitions: explicit coalitions instead of sizes.
    levels, formats, seeds: grid axes.
    pair_proportions: for two-member coalitions, extra runs with the first
      member (alphabetically) at each of these shares (0 < p < 1).
    evaluate_non_members: evaluate every run on all communities.
    eps_values: privacy budgets the traces were perturbed with, recorded in
      each result (None: no perturbation).
    community_levels: community -> the rationale levels its data has (None:
      all levels). A coalition runs only at levels all its members have;
      :meth:`left_out` lists the (level, coalition) pairs this skips.
    selection: contribution policy the traces were selected with (e.g.
      'key_tokens:k=4'), recorded in each result.
    zero_shot: also run, per format, the student before any fine-tuning
      (0 steps) on every community: the zero-shot baseline of a pretrained
      student. One run, with the first seed: greedy decoding of the untouched
      model does not depend on the seed (LoRA adapters start at B = 0); for a
      random-init student it only measures noise. Nor does it depend on the
      rationale level (a prompt is the question alone), so the run is at the
      first level and later levels add one only for communities the earlier
      ones lack; the analysis shares it across levels. These runs come first,
      so a sweep run in pieces has its baseline from the first piece.
    steps_per_member: train each run for this many steps per member (a
      coalition of k trains k times as long, so every member's data gets the
      same steps as when it trains alone: pooling adds data, it does not
      take training from anyone); None: every run trains the gin
      configuration's ``TRAIN_STEPS`` (a fixed budget shared by the members).
  """
  communities: tuple[str, ...]
  coalition_sizes: tuple[int, ...] = ()
  coalitions: tuple[tuple[str, ...], ...] = ()
  levels: tuple[int, ...] = (6,)
  formats: tuple[str, ...] = ("cot_label",)
  seeds: tuple[int, ...] = (0,)
  pair_proportions: tuple[float, ...] = ()
  evaluate_non_members: bool = False
  eps_values: tuple[float | None, ...] = (None,)
  community_levels: Mapping[str, Sequence[int]] | None = None
  selection: str | None = None
  zero_shot: bool = False
  steps_per_member: int | None = None

  def __post_init__(self):
    for c in self.communities:
      names.validate_name(c)
    if self.community_levels is not None:
      missing = set(self.communities) - set(self.community_levels)
      if missing:
        raise ValueError(f"community_levels has no levels for {sorted(missing)}")
      for levels in self.community_levels.values():
        for level in levels:
          names.validate_level(level)
    for p in self.pair_proportions:
      if not 0 < p < 1:
        raise ValueError(f"pair proportions must be in (0, 1), got {p}")

  def coalition_list(self) -> list[tuple[str, ...]]:
    if self.coalitions:
      unknown = {m for c in self.coalitions for m in c} - set(self.communities)
      if unknown:
        raise ValueError(f"coalitions name communities outside the sweep: {sorted(unknown)}")
      return [tuple(sorted(c)) for c in self.coalitions]
    sizes = self.coalition_sizes or range(1, len(self.communities) + 1)
    return [c for k in sizes for c in itertools.combinations(sorted(self.communities), k)]

  def _has_level(self, members: Sequence[str], level: int) -> bool:
    return self.community_levels is None or all(
        level in self.community_levels[m] for m in members)

  def left_out(self) -> list[tuple[int, tuple[str, ...]]]:
    """(level, coalition) pairs of the grid skipped because a member lacks the level."""
    return [(level, members) for level in self.levels for members in self.coalition_list()
            if not self._has_level(members, level)]

  def runs(self) -> list[experiment.CoalitionSpec]:
    """Every run of the grid, in a stable order."""
    out = []
    if self.zero_shot:  # One untrained student per format, scored on everyone.
      for fmt in self.formats:
        covered: set[str] = set()
        for level in self.levels:
          everyone = tuple(sorted(c for c in self.communities
                                  if c not in covered and self._has_level((c,), level)))
          if everyone:
            covered.update(everyone)
            out.append(experiment.CoalitionSpec(members=everyone, level=level, fmt=fmt,
                                                seed=self.seeds[0], selection=self.selection,
                                                baseline="zero_shot"))
    for level, fmt, seed, eps, members in itertools.product(
        self.levels, self.formats, self.seeds, self.eps_values, self.coalition_list()):
      if not self._has_level(members, level):
        continue
      evaluate_on = tuple(sorted(self.communities)) if self.evaluate_non_members else None
      proportions: list[Mapping[str, float] | None] = [None]
      if len(members) == 2:
        proportions += [{members[0]: p, members[1]: 1 - p} for p in self.pair_proportions]
      for props in proportions:
        steps = None if self.steps_per_member is None else self.steps_per_member * len(members)
        out.append(experiment.CoalitionSpec(members=members, level=level, fmt=fmt, seed=seed,
                                            proportions=props, evaluate_on=evaluate_on, eps=eps,
                                            selection=self.selection, train_steps=steps))
    return out


def run_sweep(*, spec: SweepSpec, sweep_dir: str, gin_files: Sequence[str],
              gin_bindings: Sequence[str] = (), workers: int = 1,
              dry_run: bool = False) -> list[results.RunResult]:
  """Runs (or prints) every unfinished run of ``spec``; returns all finished results.

  Raises RuntimeError naming the failed runs after every run was tried and the
  tables were written.
  """
  sweep_dir = Path(sweep_dir)
  runs = spec.runs()
  todo = runner.prepare_runs(sweep_dir, runs, gin_files=gin_files, gin_bindings=gin_bindings)
  commands = runner.write_commands(sweep_dir, todo)
  print(f"sweep {sweep_dir}: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to run "
        f"(commands in {sweep_dir / runner.COMMANDS_FILENAME})", flush=True)
  if spec.left_out():
    print(f"sweep {sweep_dir}: {len(spec.left_out())} (level, coalition) pairs left out: a member "
          "has no rationales at that level", flush=True)
  if dry_run:
    print(commands, end="")
    return []
  failed = runner.run_all(todo, workers=workers)
  rows = runner.write_tables(sweep_dir)
  if failed:
    raise RuntimeError(f"{len(failed)} run(s) failed: {[d.name for d in failed]}")
  return rows
