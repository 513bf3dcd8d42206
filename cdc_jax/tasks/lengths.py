"""Token lengths of tasks: percentiles, examples cut by feature lengths, lengths from data.

A task's examples are measured as the model sees them (formatted, tokenized
with the task's vocabulary, EOS appended) but untrimmed; an example is *cut*
when its inputs or targets are longer than the feature length (seqio keeps
the first ``length - 1`` tokens and the EOS). Feature lengths may be numbers
or percentiles of the data (``{'inputs': 'p95', 'targets': 128}``), resolved
over the examples of every task of a mixture.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import seqio

from cdc_jax import io as io_lib

FEATURES = ("inputs", "targets")
LENGTHS_FILENAME = "lengths.json"
_PERCENTILE = re.compile(r"p(\d+(?:\.\d+)?)")


@dataclasses.dataclass(frozen=True)
class TokenLengths:
  """Untrimmed token lengths (EOS included) of one task's split."""
  task: str
  split: str
  inputs: np.ndarray
  targets: np.ndarray

  def of(self, feature: str) -> np.ndarray:
    return {"inputs": self.inputs, "targets": self.targets}[feature]


@dataclasses.dataclass(frozen=True)
class CutCounts:
  """How many examples of one task's split the feature lengths cut."""
  task: str
  split: str
  examples: int
  inputs_cut: int
  targets_cut: int
  inputs_max: int
  targets_max: int

  @property
  def any_cut(self) -> bool:
    return bool(self.inputs_cut or self.targets_cut)


_CACHE: dict[tuple[str, str], TokenLengths] = {}


def leaf_tasks(mixture_or_task_name: str, *, split: str | None = None,
               scored_only: bool = False) -> list[seqio.Task]:
  """The tasks under a task or mixture name (with ``split``; scored ones only if asked)."""
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  tasks = list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]
  return [t for t in tasks if (split is None or split in t.splits)
          and (not scored_only or t.metric_fns)]


def token_lengths(task_name: str, split: str) -> TokenLengths:
  """Lengths of every example of ``task_name``'s ``split`` (cached per process).

  Task names are unique per process (re-registering a name with other
  content is refused), so the name and split identify the data.
  """
  key = (task_name, split)
  if key not in _CACHE:
    task = seqio.get_mixture_or_task(task_name)
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False)
    inputs, targets = [], []
    for ex in ds.as_numpy_iterator():
      inputs.append(len(ex["inputs"]))
      targets.append(len(ex["targets"]))
    _CACHE[key] = TokenLengths(task_name, split, np.asarray(inputs, np.int64),
                               np.asarray(targets, np.int64))
  return _CACHE[key]


def percentile_length(lengths: np.ndarray, spec: str) -> int:
  """The smallest length covering ``spec`` of the examples ('p95', 'p99.5', 'p100' = max).

  >>> percentile_length(np.arange(1, 101), 'p95')
  95
  """
  match = _PERCENTILE.fullmatch(spec.strip().lower())
  if match is None or not 0 < float(match.group(1)) <= 100:
    raise ValueError(f"feature length {spec!r}: expected a number of tokens or a percentile "
                     "'pN' with 0 < N <= 100 (e.g. 'p95')")
  if not len(lengths):
    raise ValueError(f"feature length {spec!r}: no examples to take a percentile of")
  return int(math.ceil(np.percentile(lengths, float(match.group(1)), method="inverted_cdf")))


def resolve_feature_lengths(mixture_or_task_name: str | Sequence[str],
                            task_feature_lengths: Mapping[str, int | str], *, split: str,
                            scored_only: bool = False) -> dict[str, int]:
  """Feature lengths with every percentile ('p95') replaced by that of the data.

  Percentiles are taken over the examples of all tasks of the names given
  (unweighted by mixture rates), in ``split``.
  """
  out: dict[str, int] = {}
  for feature, value in task_feature_lengths.items():
    if isinstance(value, str):
      tasks = _tasks(mixture_or_task_name, split, scored_only)
      values = np.concatenate([token_lengths(t.name, split).of(feature) for t in tasks] or
                              [np.zeros(0, np.int64)])
      out[feature] = percentile_length(values, value)
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"task_feature_lengths[{feature!r}] = {value!r}: expected a positive "
                       "number of tokens or a percentile such as 'p95'")
    else:
      out[feature] = value
  return out


def _tasks(names: str | Sequence[str], split: str, scored_only: bool) -> list[seqio.Task]:
  names = [names] if isinstance(names, str) else list(names)
  seen: dict[str, seqio.Task] = {}
  for name in names:
    for task in leaf_tasks(name, split=split, scored_only=scored_only):
      seen.setdefault(task.name, task)
  return list(seen.values())


def cut_counts(mixture_or_task_name: str | Sequence[str], task_feature_lengths: Mapping[str, int],
               *, split: str, scored_only: bool = False) -> list[CutCounts]:
  """Per task: examples, and how many have inputs / targets longer than the lengths."""
  out = []
  for task in _tasks(mixture_or_task_name, split, scored_only):
    lengths = token_lengths(task.name, split)
    out.append(CutCounts(
        task=task.name, split=split, examples=len(lengths.inputs),
        inputs_cut=int(np.sum(lengths.inputs > task_feature_lengths["inputs"])),
        targets_cut=int(np.sum(lengths.targets > task_feature_lengths["targets"])),
        inputs_max=int(lengths.inputs.max(initial=0)),
        targets_max=int(lengths.targets.max(initial=0))))
  return out


def audit_feature_lengths(mixture_or_task_name: str | Sequence[str],
                          task_feature_lengths: Mapping[str, int | str], *, split: str,
                          out_dir: str | os.PathLike | None = None,
                          scored_only: bool = False) -> dict[str, int]:
  """Resolves percentile lengths, reports (and warns about) cut examples; returns the lengths.

  Logs one line per run (a warning naming the tasks when any example is
  cut) and, with ``out_dir``, writes ``lengths.json`` there: requested and
  resolved lengths and the per-task counts.
  """
  resolved = resolve_feature_lengths(mixture_or_task_name, task_feature_lengths, split=split,
                                     scored_only=scored_only)
  counts = cut_counts(mixture_or_task_name, resolved, split=split, scored_only=scored_only)
  total = sum(c.examples for c in counts)
  inputs_cut = sum(c.inputs_cut for c in counts)
  targets_cut = sum(c.targets_cut for c in counts)
  summary = (f"feature lengths {resolved} on {split}: {inputs_cut} of {total} examples have "
             f"inputs cut, {targets_cut} targets cut")
  if inputs_cut or targets_cut:
    worst = ", ".join(f"{c.task} ({c.inputs_cut} inputs, {c.targets_cut} targets of "
                      f"{c.examples}; longest {c.inputs_max}/{c.targets_max})"
                      for c in counts if c.any_cut)
    logging.warning("%s: %s (see python -m cdc_jax.tasks.stats, or set lengths like 'p99')",
                    summary, worst)
  else:
    logging.info("%s", summary)
  if out_dir is not None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    io_lib.atomic_write_text(Path(out_dir) / LENGTHS_FILENAME, json.dumps({
        "split": split, "requested": dict(task_feature_lengths), "task_feature_lengths": resolved,
        "examples": total, "inputs_cut": inputs_cut, "targets_cut": targets_cut,
        "tasks": {c.task: {"examples": c.examples, "inputs_cut": c.inputs_cut,
                           "targets_cut": c.targets_cut, "inputs_max": c.inputs_max,
                           "targets_max": c.targets_max} for c in counts},
    }, indent=2, sort_keys=True) + "\n")
  return resolved
