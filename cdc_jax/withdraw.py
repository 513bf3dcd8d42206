r"""Withdraw a community's contribution from a sweep: mark affected runs stale, re-run without it.

    python -m cdc_jax.withdraw --community strategy --sweep runs/demo \
        [--records id1,id2] [--reason TEXT] [--consent FILE] [--workers 2] [--no_rerun]

1. Records the withdrawal in the consent registry (:mod:`cdc_jax.consent`).
2. Finds the sweep's runs that used it: their training manifest lists
   withdrawn records, or (whole-community withdrawal) they evaluated on it.
   Each is marked stale: ``result.json`` becomes ``result.stale.json`` and
   ``STALE.json`` says why and which run replaces it.
3. Re-runs each without the withdrawn data: for a whole community, the same
   spec minus the community (proportions renormalised, evaluation without
   it); if it was the only member, the run is withdrawn with no replacement.
   For records, the same spec on a copy of the community without them
   (``SWEEP/.consent/``). Replacement runs register only the communities the
   stale run registered, minus the withdrawn data (so it no longer trains the
   vocabulary either). A replacement that already finished in the sweep
   without the withdrawn data is reused.
4. Rewrites ``results.jsonl`` / ``results.csv`` over the finished runs.

Training itself refuses withdrawn data, so re-running the original sweep
fails loudly on the withdrawn runs instead of silently retraining them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from cdc_jax import consent
from cdc_jax.coalitions import experiment, results
from cdc_jax.data import records as records_lib

STALE_FILENAME = "STALE.json"
STALE_RESULT = "result.stale.json"
CONSENT_DATA_DIR = ".consent"
RunFn = Callable[[Path], int]


@dataclasses.dataclass(frozen=True)
class Affected:
  """A run that used withdrawn data, and what replaces it (None: nothing)."""
  run_dir: Path
  spec: experiment.CoalitionSpec
  why: str
  replacement: experiment.CoalitionSpec | None


@dataclasses.dataclass(frozen=True)
class WithdrawalReport:
  """What a withdrawal did to a sweep."""
  affected: tuple[Affected, ...]
  rerun: tuple[Path, ...]
  reused: tuple[Path, ...]
  failed: tuple[Path, ...]

  @property
  def withdrawn_only(self) -> tuple[Path, ...]:
    """Stale runs with no replacement (the community was their only member)."""
    return tuple(a.run_dir for a in self.affected if a.replacement is None)


def _manifest(run_dir: Path) -> dict[str, Any] | None:
  try:
    return consent.read_training_manifest(run_dir / "model")
  except FileNotFoundError:
    return None


def _without(spec: experiment.CoalitionSpec, community: str) -> experiment.CoalitionSpec | None:
  members = tuple(m for m in spec.members if m != community)
  if not members:
    return None
  proportions = None
  if spec.proportions is not None and len(members) > 1:
    proportions = {m: spec.proportions[m] for m in members}
    if sum(proportions.values()) <= 0:
      proportions = None
  evaluate_on = None
  if spec.evaluate_on is not None:
    evaluate_on = tuple(c for c in spec.evaluate_on if c != community) or None
  return dataclasses.replace(spec, members=members, proportions=proportions,
                             evaluate_on=evaluate_on)


def affected_runs(sweep_dir: str | os.PathLike, community: str, consents: consent.Consents, *,
                  whole_community: bool) -> list[Affected]:
  """The finished runs of ``sweep_dir`` that used ``community``'s withdrawn data."""
  out = []
  for run_dir in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
    config_path = run_dir / experiment.RUN_CONFIG
    if not config_path.exists() or not (run_dir / results.RESULT_FILENAME).exists():
      continue
    spec = experiment.CoalitionSpec.from_json(json.loads(config_path.read_text())["spec"])
    manifest = _manifest(run_dir)
    why = []
    if manifest is not None:
      for v in consent.check_manifest(manifest, consents, community=community):
        why.append(f"trained on {len(v.record_ids)} withdrawn record(s) of {community}")
    elif community in spec.members:
      why.append(f"trained on {community} (no training manifest to tell which records)")
    evaluated = spec.evaluate_on or spec.members
    if whole_community and community in evaluated:
      why.append(f"evaluated on {community}")
    if why:
      replacement = _without(spec, community) if whole_community else spec
      out.append(Affected(run_dir, spec, "; ".join(dict.fromkeys(why)), replacement))
  return out


def _mark_stale(item: Affected, *, community: str, records: Sequence[str] | None,
                consents: consent.Consents, now: str) -> None:
  result = item.run_dir / results.RESULT_FILENAME
  if result.exists():
    os.replace(result, item.run_dir / STALE_RESULT)
  note = {"community": community, "records": list(records) if records else None,
          "withdrawn_at": consents.of(community).withdrawn_at, "reason": consents.of(community).reason,
          "marked_at": now, "why": item.why,
          "replaced_by": item.replacement.run_id if item.replacement else None}
  records_lib.atomic_write_text(item.run_dir / STALE_FILENAME, json.dumps(note, indent=1) + "\n")


def _archive(run_dir: Path, now: str) -> None:
  """Moves a stale run's outputs aside so its replacement starts from scratch in place."""
  archive = run_dir / f"stale-{now.replace(':', '')}"
  archive.mkdir(exist_ok=True)
  for name in ("model", "eval", STALE_RESULT, STALE_FILENAME, "log.txt"):
    if (run_dir / name).exists():
      shutil.move(str(run_dir / name), str(archive / name))


def _consented_communities(item: Affected, community: str, consents: consent.Consents,
                           sweep_dir: Path, *, whole_community: bool) -> list[str] | None:
  """Manifests the replacement registers: the stale run's, minus the withdrawn data."""
  manifest = _manifest(item.run_dir)
  if manifest is None:
    return None
  registered = dict(manifest.get("vocabulary", {}).get("communities", {}))
  if whole_community:
    registered.pop(community, None)
  elif community in registered:
    ids = sorted(consents.of(community).records)
    key = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:12]
    target = sweep_dir / CONSENT_DATA_DIR / f"{community}-{key}"
    if not (target / records_lib.MANIFEST_FILENAME).exists():
      consent.filter_community(registered[community], target, consents)
    registered[community] = str(target / records_lib.MANIFEST_FILENAME)
  return [registered[name] for name in sorted(registered)]


def _run_subprocess(env: dict[str, str]) -> RunFn:
  from cdc_jax import sweep

  def run(run_dir: Path) -> int:
    command = sweep.run_command(run_dir)
    with (run_dir / "log.txt").open("a") as log:
      log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
      log.flush()
      return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
  return run


def withdraw_from_sweep(sweep_dir: str | os.PathLike, community: str, *,
                        records: Sequence[str] | None = None, reason: str | None = None,
                        consent_path: str | os.PathLike | None = None, workers: int = 1,
                        rerun: bool = True, run_fn: RunFn | None = None) -> WithdrawalReport:
  """Withdraws ``community`` (or some of its ``records``) and repairs ``sweep_dir``.

  ``run_fn(run_dir) -> exit status`` runs one prepared run (default: the
  experiment CLI in a subprocess that sees the same consent registry).
  """
  sweep_dir = Path(sweep_dir)
  consent_path = Path(consent_path) if consent_path else consent.default_registry_path()
  now = consent.utc_now()
  consents = consent.withdraw(community, records=records, reason=reason, path=consent_path,
                              now=now)
  whole = records is None
  affected = affected_runs(sweep_dir, community, consents, whole_community=whole)
  for item in affected:
    _mark_stale(item, community=community, records=records, consents=consents, now=now)
  todo: dict[str, Path] = {}
  reused = []
  for item in affected:
    if item.replacement is None or not rerun:
      continue
    run_dir = sweep_dir / item.replacement.run_id
    if run_dir in todo.values():
      continue
    if run_dir != item.run_dir and (run_dir / results.RESULT_FILENAME).exists():
      reused.append(run_dir)  # Finished without the withdrawn data (else it would be stale).
      continue
    config = json.loads((item.run_dir / experiment.RUN_CONFIG).read_text())
    bindings = list(config["gin_bindings"])
    manifests = _consented_communities(item, community, consents, sweep_dir,
                                       whole_community=whole)
    if manifests is not None:
      from cdc_jax.contribution import variants

      bindings += variants.community_bindings(manifests)
    if run_dir == item.run_dir:
      _archive(run_dir, now)
    experiment.write_run_config(run_dir, item.replacement, gin_files=config["gin_files"],
                                gin_bindings=bindings)
    todo[item.replacement.run_id] = run_dir
  run_fn = run_fn or _run_subprocess(dict(os.environ, PYTHONUNBUFFERED="1",
                                          **{consent.CONSENT_ENV: str(consent_path)}))
  failed = []
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    for run_dir, code in zip(todo.values(), pool.map(run_fn, todo.values())):
      if code != 0:
        failed.append(run_dir)
  rows = results.collect_results(sweep_dir)
  results.write_results(sweep_dir / results.TABLE_FILENAME, rows)
  results.write_results_csv(sweep_dir / "results.csv", rows)
  return WithdrawalReport(tuple(affected), tuple(todo.values()), tuple(reused), tuple(failed))


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (1 if a re-run failed)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--community", required=True, help="the withdrawing community")
  parser.add_argument("--sweep", type=Path, required=True, help="sweep directory to repair")
  parser.add_argument("--records", default=None,
                      help="comma-separated record ids (default: the whole community)")
  parser.add_argument("--reason", default=None)
  parser.add_argument("--consent", type=Path, default=None,
                      help=f"consent registry (default ${consent.CONSENT_ENV} or the cache's)")
  parser.add_argument("--workers", type=int, default=1)
  parser.add_argument("--no_rerun", action="store_true", help="only mark runs stale")
  args = parser.parse_args(argv)
  records = [r for r in args.records.split(",") if r] if args.records else None
  report = withdraw_from_sweep(args.sweep, args.community, records=records, reason=args.reason,
                               consent_path=args.consent, workers=args.workers,
                               rerun=not args.no_rerun)
  what = f"{len(records)} record(s) of {args.community}" if records else args.community
  print(f"withdrew {what}: {len(report.affected)} run(s) marked stale")
  for item in report.affected:
    target = item.replacement.run_id if item.replacement else "none (only member: withdrawn)"
    print(f"  {item.run_dir.name}: {item.why} -> {target}")
  print(f"re-ran {len(report.rerun)}, reused {len(report.reused)} finished run(s), "
        f"{len(report.failed)} failed")
  for run_dir in report.failed:
    print(f"  FAILED: {run_dir} (see {run_dir / 'log.txt'})", file=sys.stderr)
  return 1 if report.failed else 0


if __name__ == "__main__":
  sys.exit(main())
