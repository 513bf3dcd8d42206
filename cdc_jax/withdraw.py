r"""Withdraw a community's contribution from a sweep: mark affected runs stale, re-run without it.

    python -m cdc_jax.withdraw --community strategy --sweep runs/demo \
        [--records id1,id2] [--reason TEXT] [--consent FILE] [--workers 2] [--no_rerun] \
        [--manifest DIR]
    python -m cdc_jax.withdraw --undo --community strategy [--records id1,id2] [--sweep runs/demo]

0. Checks everything before writing anything: each ``--sweep`` is a sweep
   directory, the community is one its runs used (or ``--manifest`` names
   it), and every record id exists in the community (whose manifest the
   runs' training manifests name, or ``--manifest``). A typo writes nothing.
1. Records the withdrawal in the consent registry (:mod:`cdc_jax.consent`),
   atomically, with a ledger event; the counts printed are of records whose
   state changed (ids already withdrawn are counted apart).
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

``--undo`` reinstates the withdrawal (the whole community's, or the records
named) with a ``reinstate`` event in the ledger, and in each ``--sweep``
restores the results of stale runs that now pass the consent check
(``result.stale.json`` back to ``result.json``). Runs re-run in place
without withdrawn records keep their new results.
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


class WithdrawalError(ValueError):
  """A withdrawal that names an unknown sweep, community or record; nothing was written."""


@dataclasses.dataclass(frozen=True)
class WithdrawalReport:
  """What a withdrawal did to a sweep."""
  affected: tuple[Affected, ...]
  rerun: tuple[Path, ...]
  reused: tuple[Path, ...]
  failed: tuple[Path, ...]
  change: consent.ConsentChange | None = None

  @property
  def withdrawn_only(self) -> tuple[Path, ...]:
    """Stale runs with no replacement (the community was their only member)."""
    return tuple(a.run_dir for a in self.affected if a.replacement is None)


def _manifest(run_dir: Path) -> dict[str, Any] | None:
  try:
    return consent.read_training_manifest(run_dir / "model")
  except FileNotFoundError:
    return None


def _run_dirs(sweep_dir: Path) -> list[Path]:
  return sorted(p for p in sweep_dir.iterdir() if (p / experiment.RUN_CONFIG).is_file())


def check_sweep_dirs(sweep_dirs: Sequence[str | os.PathLike]) -> list[Path]:
  """The sweep directories, each checked to exist and hold runs; else WithdrawalError."""
  out = []
  for sweep_dir in map(Path, sweep_dirs):
    if not sweep_dir.is_dir():
      raise WithdrawalError(f"sweep directory {sweep_dir} does not exist")
    if not _run_dirs(sweep_dir):
      raise WithdrawalError(f"{sweep_dir} holds no sweep runs (no */{experiment.RUN_CONFIG})")
    out.append(sweep_dir)
  return out


def known_communities(sweep_dirs: Sequence[Path]) -> dict[str, str | None]:
  """Community -> manifest path (None if unknown) of every community the sweeps' runs used."""
  known: dict[str, str | None] = {}
  for sweep_dir in sweep_dirs:
    for run_dir in _run_dirs(sweep_dir):
      spec = experiment.CoalitionSpec.from_json(
          json.loads((run_dir / experiment.RUN_CONFIG).read_text())["spec"])
      for name in (*spec.members, *(spec.evaluate_on or ())):
        known.setdefault(name, None)
      manifest = _manifest(run_dir)
      if manifest is None:
        continue
      paths = dict(manifest.get("vocabulary", {}).get("communities", {}))
      paths.update({c: info.get("manifest") for c, info in manifest["communities"].items()})
      for name, path in paths.items():
        if path and CONSENT_DATA_DIR not in Path(path).parts:  # Not a filtered copy.
          known[name] = known.get(name) or path
        else:
          known.setdefault(name, None)
  return known


def check_withdrawal(sweep_dirs: Sequence[str | os.PathLike], community: str, *,
                     records: Sequence[str] | None = None,
                     manifest: str | os.PathLike | None = None) -> list[str] | None:
  """Checks a withdrawal before anything is written; returns the distinct record ids.

  Raises WithdrawalError if a sweep directory is missing, the community is
  not one the sweeps used (nor ``manifest``'s), or a record id is not in it.
  """
  import difflib

  sweeps = check_sweep_dirs(sweep_dirs)
  known = known_communities(sweeps)
  if manifest is not None:
    name = records_lib.read_manifest(manifest).name
    if name != community:
      raise WithdrawalError(f"--manifest {manifest} is community {name!r}, not {community!r}")
    known[community] = str(manifest)
  if community not in known:
    close = difflib.get_close_matches(community, list(known), n=1)
    raise WithdrawalError(
        f"community {community!r} is not used by any run of {', '.join(map(str, sweeps))}"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + f" (known: {', '.join(sorted(known)) or 'none'}; --manifest names another)")
  if records is None:
    return None
  records = list(dict.fromkeys(r.strip() for r in records if r.strip()))
  if not records:
    raise WithdrawalError("--records names no record id")
  path = known[community]
  if path is None or not Path(path).exists():
    raise WithdrawalError(f"cannot check the record ids: no training manifest of the sweep names "
                          f"an existing community directory of {community!r}"
                          + (f" ({path} is gone)" if path else "") + "; pass --manifest")
  data = records_lib.load_community(path)
  ids = {r.id for recs in data.records.values() for r in recs}
  unknown = [r for r in records if r not in ids]
  if unknown:
    raise WithdrawalError(f"{len(unknown)} record id(s) not in community {community!r} "
                          f"({path}, {len(ids)} records): {', '.join(unknown[:10])}"
                          + (" ..." if len(unknown) > 10 else ""))
  return records


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
                        rerun: bool = True, run_fn: RunFn | None = None,
                        manifest: str | os.PathLike | None = None) -> WithdrawalReport:
  """Withdraws ``community`` (or some of its ``records``) and repairs ``sweep_dir``.

  Everything is checked first (:func:`check_withdrawal`): on a WithdrawalError
  nothing is written. ``run_fn(run_dir) -> exit status`` runs one prepared run
  (default: the experiment CLI in a subprocess that sees the same consent registry).
  """
  sweep_dir = Path(sweep_dir)
  records = check_withdrawal([sweep_dir], community, records=records, manifest=manifest)
  consent_path = Path(consent_path) if consent_path else consent.default_registry_path()
  change = consent.record_withdrawal(community, records=records, reason=reason,
                                     path=consent_path)
  report = repair_sweep(sweep_dir, community, records=records, consents=change.consents,
                        consent_path=consent_path, workers=workers, rerun=rerun, run_fn=run_fn)
  return dataclasses.replace(report, change=change)


def repair_sweep(sweep_dir: str | os.PathLike, community: str, *, records: Sequence[str] | None,
                 consents: consent.Consents, consent_path: str | os.PathLike, workers: int = 1,
                 rerun: bool = True, run_fn: RunFn | None = None) -> WithdrawalReport:
  """Marks the runs of ``sweep_dir`` that used withdrawn data stale and re-runs them without it."""
  sweep_dir = Path(sweep_dir)
  now = consent.utc_now()
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


def restore_sweep(sweep_dir: str | os.PathLike, community: str,
                  consents: consent.Consents) -> list[Path]:
  """After a reinstatement: restores stale runs (of ``community``) that now pass the consent check.

  A run re-run in place (its stale outputs archived) keeps its new result.
  Returns the restored run directories; rewrites the results tables.
  """
  sweep_dir = Path(sweep_dir)
  restored = []
  for run_dir in _run_dirs(sweep_dir):
    note_path, stale = run_dir / STALE_FILENAME, run_dir / STALE_RESULT
    finished = (run_dir / results.RESULT_FILENAME).exists()
    if finished or not (note_path.is_file() and stale.is_file()):
      continue
    if json.loads(note_path.read_text()).get("community") != community:
      continue
    manifest = _manifest(run_dir)
    spec = experiment.CoalitionSpec.from_json(
        json.loads((run_dir / experiment.RUN_CONFIG).read_text())["spec"])
    evaluated = spec.evaluate_on or spec.members
    if manifest is None or consent.check_manifest(manifest, consents) or any(
        consents.of(c).withdrawn_at is not None for c in evaluated):
      continue
    os.replace(note_path, run_dir / f"STALE.reinstated-{consent.utc_now().replace(':', '')}.json")
    os.replace(stale, run_dir / results.RESULT_FILENAME)
    restored.append(run_dir)
  rows = results.collect_results(sweep_dir)
  results.write_results(sweep_dir / results.TABLE_FILENAME, rows)
  results.write_results_csv(sweep_dir / "results.csv", rows)
  return restored


def _undo(args: argparse.Namespace, records: list[str] | None) -> int:
  sweeps = check_sweep_dirs(args.sweep or [])
  change = consent.reinstate(args.community, records=records, reason=args.reason,
                             path=args.consent)
  what = (f"{len(change.changed)} record(s) of {args.community}" if records is not None
          else f"community {args.community} (its whole-community withdrawal)")
  print(f"reinstated {what}; recorded in the consent ledger")
  for sweep_dir in sweeps:
    restored = restore_sweep(sweep_dir, args.community, change.consents)
    print(f"{sweep_dir}: restored {len(restored)} stale run(s)")
    for run_dir in restored:
      print(f"  {run_dir.name}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (1 if a re-run failed, 2 on bad input)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--community", required=True, help="the withdrawing community")
  parser.add_argument("--sweep", type=Path, action="append", default=[],
                      help="sweep directory to repair (repeatable; required unless --undo)")
  parser.add_argument("--records", default=None,
                      help="comma-separated record ids (default: the whole community)")
  parser.add_argument("--reason", default=None)
  parser.add_argument("--consent", type=Path, default=None,
                      help=f"consent registry (default ${consent.CONSENT_ENV} or the cache's)")
  parser.add_argument("--manifest", type=Path, default=None,
                      help="the community's directory or community.json, if no run names it")
  parser.add_argument("--workers", type=int, default=1)
  parser.add_argument("--no_rerun", action="store_true", help="only mark runs stale")
  parser.add_argument("--undo", action="store_true",
                      help="reinstate the withdrawal (the records named, else the community's)")
  args = parser.parse_args(argv)
  records = None if args.records is None else [r for r in args.records.split(",") if r.strip()]
  try:
    if args.undo:
      return _undo(args, records)
    if not args.sweep:
      parser.error("--sweep is required (repeatable)")
    records = check_withdrawal(args.sweep, args.community, records=records,
                               manifest=args.manifest)
  except (WithdrawalError, ValueError) as e:
    print(f"withdraw: error: {e} (nothing was written)", file=sys.stderr)
    return 2
  consent_path = args.consent or consent.default_registry_path()
  change = consent.record_withdrawal(args.community, records=records, reason=args.reason,
                                     path=consent_path)
  if records is None:
    print(f"community {args.community} had already withdrawn entirely; nothing new withdrawn"
          if change.already_whole else f"withdrew community {args.community} entirely")
  else:
    print(f"withdrew {len(change.changed)} record(s) of {args.community}"
          + (f" ({len(change.unchanged)} already withdrawn)" if change.unchanged else ""))
  failed = 0
  for sweep_dir in args.sweep:
    report = repair_sweep(sweep_dir, args.community, records=records, consents=change.consents,
                          consent_path=consent_path, workers=args.workers,
                          rerun=not args.no_rerun)
    print(f"{sweep_dir}: {len(report.affected)} run(s) marked stale")
    for item in report.affected:
      target = item.replacement.run_id if item.replacement else "none (only member: withdrawn)"
      print(f"  {item.run_dir.name}: {item.why} -> {target}")
    print(f"re-ran {len(report.rerun)}, reused {len(report.reused)} finished run(s), "
          f"{len(report.failed)} failed")
    for run_dir in report.failed:
      print(f"  FAILED: {run_dir} (see {run_dir / 'log.txt'})", file=sys.stderr)
    failed += len(report.failed)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
