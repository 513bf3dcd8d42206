r"""A selection policy vs random at an equal token budget: selected communities, then one sweep.

    python -m cdc_jax.contribution.allocation_sweep \
        --gin_file=gin/sweeps/claim_allocation_smollm2.gin \
        --gin.SWEEP_DIR="'results/claim_allocation'" --gin.DATA_ROOT="'runs/real_cpu'" \
        [--dry_run]

(another student: its model gin, then ``gin/sweeps/claim_allocation.gin``).

Per source community, the policy (default ``learnability_gap``, scored by the
student at ``checkpoint`` in the runs' prompt, ``task_options``) keeps traces
within ``budget_tokens``; then per ``random_seeds`` seed, ``random`` keeps a
sample of the tokens the policy kept in that community (first fit: within one
trace of it). The copies live under
``SWEEP_DIR/.communities/<variant>/<community>`` and are reused when their
``selection.json`` matches. The grid of ``spec`` (at the selection's level and
format) then runs once per variant, each result recording its selection:
``learnability_gap:tokens=20000`` or
``random:tokens_of=learnability_gap:tokens=20000:seed=0``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from cdc_jax.coalitions import results
from cdc_jax.coalitions import sweep as sweep_lib
from cdc_jax.contribution import rewards, selection, variants
from cdc_jax.contribution.allocation import GapBand
from cdc_jax.contribution.budgets import Budget, TokenCounter
from cdc_jax.data import records as records_lib

if TYPE_CHECKING:  # seqio and TensorFlow load when the sweep runs, not at import.
  from cdc_jax.tasks import registry

SELECTED_COMMUNITIES_DIR = ".communities"


def random_selection_name(policy_selection: str, seed: int) -> str:
  """The ``selection`` of the equal-token random variant of ``policy_selection``."""
  return f"random:tokens_of={policy_selection}:seed={seed}"


def _select_once(source: Path, target: Path, *, want: Mapping[str, Any],
                 select: Callable[[], dict[str, Any]]) -> dict[str, Any]:
  """``select()`` into ``target`` unless its selection.json already matches ``want``."""
  summary_path = target / selection.SELECTION_FILENAME
  if summary_path.exists() and (target / records_lib.MANIFEST_FILENAME).exists():
    have = json.loads(summary_path.read_text())
    if all(have.get(k) == v for k, v in want.items()):
      return have
  summary = select()
  print(f"{target}: kept {len(summary['selected'])} of {summary['of']} traces, "
        f"{summary['kept_tokens']} of {summary['of_tokens']} tokens", flush=True)
  return summary


def materialise_selections(sources: Sequence[str | Path], root: str | Path, *, policy: str,
                           budget: Budget, inputs: selection.PolicyInputs,
                           count_tokens: TokenCounter, made_with: Mapping[str, Any],
                           random_seeds: Sequence[int]) -> dict[str, list[Path]]:
  """Selected copies of ``sources`` under ``root``: variant selection name -> manifests.

  ``made_with`` (e.g. the student checkpoint and the band) is recorded in
  each ``selection.json`` and must match for a copy to be reused.
  """
  name = selection.selection_name(policy, budget)
  out: dict[str, list[Path]] = {name: []}
  out.update({random_selection_name(name, s): [] for s in random_seeds})
  for source in sources:
    community = records_lib.load_community(source)
    target = Path(root) / name.replace(":", "_") / community.name
    notes = {"made_with": dict(made_with)}
    want = {"policy": policy, "budget": budget.name, "source": str(community.directory),
            **json.loads(json.dumps(notes))}
    summary = _select_once(source, target, want=want, select=lambda: selection.write_selection(
        source, target, policy=policy, budget=budget, inputs=inputs, count_tokens=count_tokens,
        notes=notes))
    out[name].append(target / records_lib.MANIFEST_FILENAME)
    matched = selection.matched_token_budget(summary)
    for seed in random_seeds:
      random_name = random_selection_name(name, seed)
      random_target = Path(root) / random_name.replace(":", "_") / community.name
      random_notes = {"made_with": {"tokens_of": name, **made_with}}
      random_want = {"policy": "random", "budget": matched.name, "seed": seed,
                     "source": str(community.directory), **json.loads(json.dumps(random_notes))}
      _select_once(source, random_target, want=random_want,
                   select=lambda: selection.write_selection(
                       source, random_target, policy="random", budget=matched,
                       inputs=dataclasses.replace(inputs, seed=seed), count_tokens=count_tokens,
                       notes=random_notes))
      out[random_name].append(random_target / records_lib.MANIFEST_FILENAME)
  return out


def run_allocation_sweep(*, spec: sweep_lib.SweepSpec, sweep_dir: str,
                         source_communities: Sequence[str], gin_files: Sequence[str],
                         gin_bindings: Sequence[str] = (), budget_tokens: int,
                         policy: str = "learnability_gap", random_seeds: Sequence[int] = (0, 1, 2),
                         level: int = 6, fmt: str = "cot_label", model=None,
                         checkpoint: str | os.PathLike | None = None, reference_model=None,
                         reference_checkpoint: str | os.PathLike | None = None,
                         reference_ceiling: float = 0.0, band: GapBand = GapBand(),
                         spm_model: str | None = None, vocabulary=None,
                         task_options: registry.TaskOptions | None = None,
                         student: rewards.Reward | None = None,
                         reference: rewards.Reward | None = None,
                         count_tokens: TokenCounter | None = None, workers: int = 1,
                         dry_run: bool = False,
                         ) -> list[results.RunResult]:
  """The grid of ``spec`` on the policy's selection and on equal-token random selections.

  Args:
    spec: the grid (its levels and formats become ``level`` and ``fmt``).
    sweep_dir: one directory for all variants.
    source_communities: manifests of the communities (real data: ``../shared/data``).
    gin_files, gin_bindings: of every run.
    budget_tokens: training tokens the policy may keep per community.
    policy: a registered selection policy; random_seeds: the random variants.
    level, fmt: the trained task, which the rewards and token counts render.
    model, checkpoint: the student scoring the traces (a cdc checkpoint or a HF T5 directory).
    reference_model, reference_checkpoint: a stronger reference model (optional).
    reference_ceiling, band: the learnability_gap thresholds (gin/contribution/allocation.gin).
    spm_model, vocabulary: the runs' SentencePiece model, or their vocabulary itself (e.g. a
      decoder-only student's ``llama_vocabulary``): tokens are counted and scored with it.
    task_options: the runs' task options (None: ``TaskOptions()``; gin binds
      ``@catalog.default_options()``, which a decoder-only student's model gin sets to its chat
      prompt): traces are scored and counted in the runs' prompt.
    student, reference, count_tokens: replace the model-backed rewards and counter (tests).
    workers, dry_run: as for :func:`cdc_jax.coalitions.sweep.run_sweep`.
  """
  from cdc_jax.tasks import registry

  spec = dataclasses.replace(spec, levels=(level,), formats=(fmt,))
  options = registry.TaskOptions() if task_options is None else task_options
  # Paths as text: they are recorded in each selection.json (gin may give a Path).
  checkpoint = None if checkpoint is None else os.fspath(checkpoint)
  reference_checkpoint = None if reference_checkpoint is None else os.fspath(reference_checkpoint)
  by_name = {records_lib.read_manifest(m).name: m for m in source_communities}
  missing = sorted(set(spec.communities) - set(by_name))
  if missing:
    raise ValueError(f"sweep communities {missing} are not among source_communities "
                     f"{sorted(by_name)}")
  vocab = vocabulary
  if vocab is None and (count_tokens is None or student is None):
    if spm_model is None:
      raise ValueError("give spm_model or vocabulary (the runs' own) to count tokens and score")
    from cdc_jax.tasks import vocabulary as vocabulary_lib

    vocab = vocabulary_lib.load_vocabulary(spm_model)

  def model_reward(m, path):
    if m is None or path is None:
      raise ValueError(f"the {policy} policy needs a model and its checkpoint (or student=)")
    return rewards.model_log_likelihood(model=m, vocabulary=vocab, checkpoint=path, level=level,
                                        fmt=fmt, options=options)

  if student is None and policy in ("heuristic", "learnability_gap"):
    student = model_reward(model, checkpoint)
  if reference is None and reference_checkpoint is not None:
    reference = model_reward(reference_model or model, reference_checkpoint)
  count_tokens = count_tokens or rewards.vocabulary_token_counter(vocab, level=level, fmt=fmt,
                                                                  options=options)
  made_with = {"checkpoint": checkpoint, "reference_checkpoint": reference_checkpoint,
               "band": dataclasses.asdict(band), "reference_ceiling": reference_ceiling,
               "level": level, "format": fmt, "spm_model": spm_model,
               "prompt": {"template": options.prompt_template, "inputs_eos": options.inputs_eos}}
  selected = materialise_selections(
      [by_name[c] for c in sorted(spec.communities)], Path(sweep_dir) / SELECTED_COMMUNITIES_DIR,
      policy=policy, budget=Budget(tokens=budget_tokens),
      inputs=selection.PolicyInputs(student=student, reference=reference, band=band,
                                    reference_ceiling=reference_ceiling),
      count_tokens=count_tokens, made_with=made_with, random_seeds=random_seeds)
  runs = [variants.Variant(selection=name, gin_bindings=variants.community_bindings(manifests))
          for name, manifests in selected.items()]
  return variants.run_variants(spec=spec, variants=runs, sweep_dir=sweep_dir,
                               gin_files=gin_files, gin_bindings=gin_bindings, workers=workers,
                               dry_run=dry_run)


def main(argv: Sequence[str] | None = None) -> None:
  """Runs the gin-configured ``run_allocation_sweep``."""
  from cdc_jax import config_cli

  _, overrides = config_cli.parse_sweep_flags(argv, description=__doc__.split("\n")[0])
  config_cli.configured("cdc_jax.contribution.allocation_sweep", "run_allocation_sweep")(
      **overrides)


if __name__ == "__main__":
  main()
