"""Running a sweep directory's runs: prepare, skip finished, run N at a time, write the tables.

One runner for everything that runs coalition experiments in a sweep
directory: the grid of :mod:`cdc_jax.coalitions.sweep` (and the variant sweeps
of :mod:`cdc_jax.contribution.variants` and ``allocation_sweep``, which run
through it), and the re-runs of :mod:`cdc_jax.contribution.withdraw`.

Each run is a directory named by its id holding ``run.json``; one with
``result.json`` is finished. A run is one ``python -m
cdc_jax.coalitions.experiment --run_dir=...`` process whose output is appended
to the run's ``log.txt``. After the runs, the sweep's tables are rewritten
over every finished run: ``results.jsonl``, ``results.csv`` and the
per-example outcomes ``examples.jsonl``.
"""

from __future__ import annotations

import concurrent.futures
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax import progress
from cdc_jax.coalitions import examples as examples_lib
from cdc_jax.coalitions import experiment, results

COMMANDS_FILENAME = "commands.txt"
LOG_FILENAME = "log.txt"
RunFn = Callable[[Path], int]  # Runs one prepared run directory; returns its exit status.


def run_command(run_dir: str | os.PathLike) -> list[str]:
  """The command that runs one prepared run directory."""
  return [sys.executable, "-m", "cdc_jax.coalitions.experiment", f"--run_dir={run_dir}"]


def subprocess_runner(env: Mapping[str, str] | None = None) -> RunFn:
  """A :data:`RunFn` running :func:`run_command` with ``env``, its output appended to the log."""
  env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")

  def run(run_dir: Path) -> int:
    command = run_command(run_dir)
    with (run_dir / LOG_FILENAME).open("a") as log:
      log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
      log.flush()
      return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
  return run


def is_finished(run_dir: Path) -> bool:
  return (run_dir / results.RESULT_FILENAME).exists()


def prepare_runs(sweep_dir: str | os.PathLike, specs: Iterable[experiment.CoalitionSpec], *,
                 gin_files: Sequence[str], gin_bindings: Sequence[str] = ()) -> list[Path]:
  """Writes ``run.json`` of every unfinished run of ``specs``; returns their directories.

  Finished runs (with ``result.json``) are skipped, so re-running a sweep
  resumes it.
  """
  todo = []
  for spec in specs:
    run_dir = Path(sweep_dir) / spec.run_id
    if is_finished(run_dir):
      continue
    experiment.write_run_config(run_dir, spec, gin_files=gin_files, gin_bindings=gin_bindings)
    todo.append(run_dir)
  return todo


def write_commands(sweep_dir: str | os.PathLike, run_dirs: Sequence[Path]) -> str:
  """Writes ``commands.txt``, one shell line per run (what ``launch/`` submits); returns it."""
  commands = "".join(shlex.join(run_command(d)) + "\n" for d in run_dirs)
  io_lib.atomic_write_text(Path(sweep_dir) / COMMANDS_FILENAME, commands)
  return commands


def _tail(path: Path, lines: int = 15) -> str:
  try:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
  except FileNotFoundError:
    return "(no log)"


def run_all(run_dirs: Sequence[Path], *, workers: int = 1, run_fn: RunFn | None = None,
            label: str = "sweep") -> list[Path]:
  """Runs every prepared run, ``workers`` at a time; returns the failed ones.

  A failed run is reported on stderr with the tail of its log and does not
  stop the others. ``run_fn`` defaults to :func:`subprocess_runner`.
  """
  run_fn = run_fn or subprocess_runner()
  failed = []
  bar = progress.Progress(len(run_dirs), label=label, unit="runs", interval=0.0)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    futures = {pool.submit(run_fn, d): d for d in run_dirs}
    for future in concurrent.futures.as_completed(futures):
      run_dir, code = futures[future], future.result()
      bar.update(1, extra=f"{run_dir.name} {'done' if code == 0 else f'FAILED (exit {code})'}")
      if code != 0:
        failed.append(run_dir)
        print(f"--- {run_dir.name} failed; last lines of {run_dir / LOG_FILENAME}:\n"
              f"{_tail(run_dir / LOG_FILENAME)}", file=sys.stderr, flush=True)
  return sorted(failed)


def write_tables(sweep_dir: str | os.PathLike) -> list[results.RunResult]:
  """Rewrites the sweep's tables over its finished runs; returns their results.

  ``results.jsonl`` and ``results.csv`` hold one row per run; ``examples.jsonl``
  every run's per-example outcomes (read by the paired bootstrap).
  """
  sweep_dir = Path(sweep_dir)
  rows = results.collect_results(sweep_dir)
  results.write_results(sweep_dir / results.TABLE_FILENAME, rows)
  results.write_results_csv(sweep_dir / "results.csv", rows)
  outcomes = examples_lib.collect_examples(sweep_dir, rows)
  lines = examples_lib.write_sweep_examples(sweep_dir / results.EXAMPLES_FILENAME, outcomes)
  print(f"sweep {sweep_dir}: {len(rows)} finished runs in {results.TABLE_FILENAME} and "
        f"results.csv, {lines} per-example outcomes of {len(outcomes)} runs in "
        f"{results.EXAMPLES_FILENAME}", flush=True)
  return rows
