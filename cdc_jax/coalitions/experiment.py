"""One coalition experiment: register the mixture, train a student, evaluate it.

A run lives in its own directory: ``run.json`` (what to run), ``model/``
(checkpoints, metrics), ``eval/`` (predictions, metrics), ``log.txt`` and,
written last, ``result.json`` (the completion marker, a
:class:`~cdc_jax.coalitions.results.RunResult`). Re-running a run resumes its
training from the latest checkpoint.

    python -m cdc_jax.coalitions.experiment --run_dir=SWEEP/strategy-trivia_L6_cot_label_s0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cdc_jax import compilation_cache, names, provenance
from cdc_jax import io as io_lib

RUN_CONFIG = "run.json"


@dataclasses.dataclass(frozen=True)
class CoalitionSpec:
  """A coalition experiment.

  Attributes:
    members: the contributing communities.
    level: rationale level of the training targets.
    fmt: target format.
    seed: training seed (init, data order).
    proportions: member -> mixing proportion, or None for the natural
      mixture (rates by training examples).
    evaluate_on: communities to evaluate on; default the members. Adding
      non-members measures what the coalition's student gives outsiders.
    eps: privacy budget the traces were perturbed with (recorded only).
    selection: contribution policy the traces were selected with (recorded only).
    baseline: None to train; 'zero_shot' evaluates the student before any
      fine-tuning (a step-0 checkpoint: meaningful for a pretrained student).
    train_steps: the run's optimizer steps; None: the gin configuration's
      ``TRAIN_STEPS``. Sweeps set it to give every member the same steps.
  """
  members: tuple[str, ...]
  level: int
  fmt: str
  seed: int = 0
  proportions: Mapping[str, float] | None = None
  evaluate_on: tuple[str, ...] | None = None
  eps: float | None = None
  selection: str | None = None
  baseline: str | None = None
  train_steps: int | None = None

  def __post_init__(self):
    object.__setattr__(self, "members", tuple(sorted(self.members)))
    if self.baseline not in (None, "zero_shot"):
      raise ValueError(f"baseline must be None or 'zero_shot', got {self.baseline!r}")
    if not self.members or len(set(self.members)) != len(self.members):
      raise ValueError(f"a coalition needs distinct members, got {self.members}")
    for m in self.members:
      names.validate_name(m)
    names.validate_level(self.level)
    names.validate_format(self.fmt)
    if self.train_steps is not None and (isinstance(self.train_steps, bool) or not isinstance(
        self.train_steps, int) or self.train_steps < 1):
      raise ValueError(f"train_steps must be a positive int or None, got {self.train_steps!r}")
    if self.proportions is not None:
      if set(self.proportions) != set(self.members):
        raise ValueError(f"proportions {dict(self.proportions)} must name exactly {self.members}")
      total = sum(self.proportions.values())
      if total <= 0 or any(p < 0 for p in self.proportions.values()):
        raise ValueError(f"proportions must be non-negative with a positive sum: {self.proportions}")
      object.__setattr__(self, "proportions",
                         {m: self.proportions[m] / total for m in self.members})

  @property
  def coalition_name(self) -> str:
    """The mixture's coalition name (members joined; proportions appended)."""
    name = "_".join(self.members) if len(self.members) > 1 else self.members[0]
    if self.proportions is not None:
      name += "_p" + "_".join(str(round(100 * self.proportions[m])) for m in self.members)
    return name

  @property
  def run_id(self) -> str:
    """Unique per spec: eps and selection, when set, are part of it."""
    run_id = f"{self.coalition_name}.L{self.level}.{self.fmt}.s{self.seed}"
    if self.eps is not None:
      run_id += f".eps{self.eps:g}"
    if self.selection is not None:
      run_id += "." + re.sub(r"[^A-Za-z0-9_=-]+", "-", self.selection)
    if self.baseline is not None:
      run_id = f"{self.baseline}.{run_id}"
    return run_id

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "CoalitionSpec":
    obj = dict(obj)
    obj["members"] = tuple(obj["members"])
    if obj.get("evaluate_on") is not None:
      obj["evaluate_on"] = tuple(obj["evaluate_on"])
    return cls(**obj)


def eval_task(community: str, level: int, fmt: str) -> str:
  """The scored task of ``community`` in format ``fmt``."""
  return names.task_name(community, level, fmt, "predict" if fmt == "step_by_step" else None)


def register_mixture(spec: CoalitionSpec) -> str:
  """Registers (if needed) and returns the training task or mixture of ``spec``."""
  from cdc_jax.tasks import registry

  if len(spec.members) == 1 and spec.proportions is None:
    return names.task_name(spec.members[0], spec.level, spec.fmt)
  return registry.register_coalition(spec.coalition_name, spec.members, level=spec.level,
                                     fmt=spec.fmt, rates=spec.proportions or "examples")


def run_coalition(spec: CoalitionSpec, run_dir: str | os.PathLike, *,
                  train_fn: Callable[..., Any], evaluate_fn: Callable[..., Any],
                  register_tasks: Callable[[], Any] | None = None):
  """Trains and evaluates one coalition; writes and returns its RunResult.

  ``train_fn``/``evaluate_fn`` are :func:`cdc_jax.train.train` and
  :func:`cdc_jax.evaluate.evaluate` with everything but the task, directories
  and seed bound (by gin in the CLI).
  """
  from cdc_jax.student import checkpoints
  from cdc_jax.coalitions import results
  from cdc_jax.tasks import registry

  run_dir = Path(run_dir)
  start = time.time()
  provenance.record_attempt(run_dir)
  if register_tasks is not None:
    register_tasks()
  mixture = register_mixture(spec)
  model_dir = run_dir / "model"
  if spec.baseline == "zero_shot":  # The student as it starts: a step-0 checkpoint.
    train_fn(mixture_or_task_name=mixture, model_dir=str(model_dir), seed=spec.seed, train_steps=0)
  else:
    steps = {} if spec.train_steps is None else {"train_steps": spec.train_steps}
    train_fn(mixture_or_task_name=mixture, model_dir=str(model_dir), seed=spec.seed, **steps)
  evaluate_on = spec.evaluate_on or spec.members
  scores = evaluate_fn(mixture_or_task_name=[eval_task(c, spec.level, spec.fmt) for c in evaluate_on],
                       checkpoint=str(model_dir), output_dir=str(run_dir / "eval"))
  accuracy, num_examples = {}, {}
  for c in evaluate_on:
    task_scores = scores[eval_task(c, spec.level, spec.fmt)]
    accuracy[c] = task_scores["accuracy"] / 100.0  # Results hold fractions, metrics percent.
    num_examples[c] = int(task_scores["num_examples"])
  write_run_examples(run_dir, spec, evaluate_on)

  def contributed(m: str) -> int:
    if spec.baseline is not None:
      return 0
    info = registry.registered_community(m)
    return info.total_train if spec.fmt == "label_only" else info.train_examples[spec.level]

  row = results.RunResult(
      run=spec.run_id, members=spec.members, level=spec.level, format=spec.fmt, seed=spec.seed,
      accuracy=accuracy, num_examples=num_examples,
      train_examples={m: contributed(m) for m in spec.members},
      steps=int(checkpoints.Checkpointer(model_dir).latest_step() or 0),
      wall_s=round(time.time() - start, 1), proportions=spec.proportions, eps=spec.eps,
      selection=spec.selection, baseline=spec.baseline)
  results.write_result(run_dir, row)
  return row


def write_run_examples(run_dir: str | os.PathLike, spec: CoalitionSpec,
                       evaluate_on: Sequence[str]) -> int:
  """Writes the run's ``examples.jsonl`` from its predictions; returns the lines written."""
  from cdc_jax.coalitions import examples as examples_lib
  from cdc_jax.coalitions import results
  from cdc_jax.data import records as records_lib
  from cdc_jax.tasks import registry

  outcomes = []
  for c in evaluate_on:
    community = records_lib.load_community(registry.registered_community(c).manifest_path)
    outcomes += examples_lib.outcomes_from_predictions(
        Path(run_dir) / "eval" / f"{eval_task(c, spec.level, spec.fmt)}.predictions.jsonl", c,
        community.records.get("test", []),
        examples_lib.majority_class(community.records.get("train", [])))
  return examples_lib.write_examples(Path(run_dir) / results.EXAMPLES_FILENAME, outcomes)


def write_run_config(run_dir: str | os.PathLike, spec: CoalitionSpec, *,
                     gin_files: Sequence[str], gin_bindings: Sequence[str]) -> Path:
  """Writes ``run.json``: the spec and the gin configuration of the run."""
  from cdc_jax.data import records as records_lib

  path = Path(run_dir) / RUN_CONFIG
  io_lib.atomic_write_text(path, json.dumps(
      {"spec": spec.to_json(), "gin_files": list(gin_files), "gin_bindings": list(gin_bindings)},
      indent=2, sort_keys=True) + "\n")
  return path


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run_dir", required=True, help=f"a directory holding {RUN_CONFIG}")
  # Multi-host runs (as in cdc_jax.train): every process of a TPU slice or Slurm job runs this.
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--multihost_auto", action="store_true",
                      help="let JAX detect the cluster (TPU pods, Slurm)")
  parser.add_argument("--examples_only", action="store_true",
                      help="only rewrite a finished run's examples.jsonl from its saved "
                           "predictions (see cdc_jax.coalitions.rescore)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  from cdc_jax import config_cli, distributed

  distributed.initialize(coordinator_address=args.coordinator_address,
                         num_processes=args.num_processes, process_id=args.process_id,
                         auto=args.multihost_auto)
  config = json.loads((Path(args.run_dir) / RUN_CONFIG).read_text())
  spec = CoalitionSpec.from_json(config["spec"])
  config_cli.parse_gin(config["gin_files"], config["gin_bindings"])
  if args.examples_only:
    config_cli.configured("cdc_jax.tasks.catalog", "register_tasks")()
    lines = write_run_examples(args.run_dir, spec, spec.evaluate_on or spec.members)
    print(f"{args.run_dir}: {lines} per-example outcomes rewritten", flush=True)
    return
  compilation_cache.enable()  # The runs of a sweep share programs (same shapes).
  row = run_coalition(spec, args.run_dir,
                      train_fn=config_cli.configured("cdc_jax.train", "train"),
                      evaluate_fn=config_cli.configured("cdc_jax.evaluate", "evaluate"),
                      register_tasks=config_cli.configured("cdc_jax.tasks.catalog", "register_tasks"))
  print(json.dumps(row.to_json(), sort_keys=True))


if __name__ == "__main__":
  main()
