"""Withdraw a community's contribution from a sweep: mark affected runs stale, re-run without it.

What ``python -m cdc_jax.withdraw`` does, per sweep directory:

0. Checks everything before writing anything
   (:func:`cdc_jax.contribution.sweep_usage.check_withdrawal`): each sweep
   is a sweep directory, the community is one its runs used (or a manifest
   names it), and every record id exists in the community. A typo writes nothing.
1. Records the withdrawal in the consent registry
   (:mod:`cdc_jax.contribution.consent`), atomically, with a ledger event.
2. Finds the sweep's runs that used it: their training manifest lists
   withdrawn records, or (whole-community withdrawal) they evaluated on it.
   Each is marked stale: ``result.json`` becomes ``result.stale.json`` and
   ``STALE.json`` says why and which run replaces it.
3. Re-runs each without the withdrawn data (:mod:`cdc_jax.coalitions.runner`):
   for a whole community, the same spec minus the community (proportions
   renormalised, evaluation without it); if it was the only member, the run is withdrawn with no
   replacement. For records, the same spec on a copy of the community without
   them (``SWEEP/.consent/``). Replacement runs register only the communities
   the stale run registered, minus the withdrawn data (so it no longer trains
   the vocabulary either). A replacement that already finished in the sweep
   without the withdrawn data is reused.
4. Rewrites the sweep's tables over the finished runs.

Training itself refuses withdrawn data, so re-running the original sweep
fails loudly on the withdrawn runs instead of silently retraining them.
:func:`restore_sweep` is the undo: after a reinstatement, stale runs that now
pass the consent check get their results back (runs re-run in place keep
their new results).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from cdc_jax import io as io_lib
from cdc_jax.coalitions import experiment, results, runner
from cdc_jax.contribution import consent, sweep_usage, variants
from cdc_jax.data import records as records_lib

STALE_FILENAME = "STALE.json"
STALE_RESULT = "result.stale.json"


@dataclasses.dataclass(frozen=True)
class WithdrawalReport:
  """What a withdrawal did to a sweep."""
  affected: tuple[sweep_usage.Affected, ...]
  rerun: tuple[Path, ...]
  reused: tuple[Path, ...]
  failed: tuple[Path, ...]
  change: consent.ConsentChange | None = None

  @property
  def withdrawn_only(self) -> tuple[Path, ...]:
    """Stale runs with no replacement (the community was their only member)."""
    return tuple(a.run_dir for a in self.affected if a.replacement is None)


def _mark_stale(item: sweep_usage.Affected, *, community: str, records: Sequence[str] | None,
                consents: consent.Consents, now: str) -> None:
  result = item.run_dir / results.RESULT_FILENAME
  if result.exists():
    os.replace(result, item.run_dir / STALE_RESULT)
  state = consents.of(community)
  note = {"community": community, "records": list(records) if records else None,
          "withdrawn_at": state.withdrawn_at, "reason": state.reason,
          "marked_at": now, "why": item.why,
          "replaced_by": item.replacement.run_id if item.replacement else None}
  io_lib.atomic_write_text(item.run_dir / STALE_FILENAME, json.dumps(note, indent=1) + "\n")


def _archive(run_dir: Path, now: str) -> None:
  """Moves a stale run's outputs aside so its replacement starts from scratch in place."""
  archive = run_dir / f"stale-{now.replace(':', '')}"
  archive.mkdir(exist_ok=True)
  for name in ("model", "eval", STALE_RESULT, STALE_FILENAME, runner.LOG_FILENAME):
    if (run_dir / name).exists():
      shutil.move(str(run_dir / name), str(archive / name))


def _consented_communities(item: sweep_usage.Affected, community: str, consents: consent.Consents,
                           sweep_dir: Path, *, whole_community: bool) -> list[str] | None:
  """Manifests the replacement registers: the stale run's, minus the withdrawn data."""
  manifest = sweep_usage.run_manifest(item.run_dir)
  if manifest is None:
    return None
  registered = dict(manifest.get("vocabulary", {}).get("communities", {}))
  if whole_community:
    registered.pop(community, None)
  elif community in registered:
    ids = sorted(consents.of(community).records)
    key = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:12]
    target = sweep_dir / sweep_usage.CONSENT_DATA_DIR / f"{community}-{key}"
    if not (target / records_lib.MANIFEST_FILENAME).exists():
      consent.filter_community(registered[community], target, consents)
    registered[community] = str(target / records_lib.MANIFEST_FILENAME)
  return [registered[name] for name in sorted(registered)]


def withdraw_from_sweep(sweep_dir: str | os.PathLike, community: str, *,
                        records: Sequence[str] | None = None, reason: str | None = None,
                        consent_path: str | os.PathLike | None = None, workers: int = 1,
                        rerun: bool = True, run_fn: runner.RunFn | None = None,
                        manifest: str | os.PathLike | None = None) -> WithdrawalReport:
  """Withdraws ``community`` (or some of its ``records``) and repairs ``sweep_dir``.

  Everything is checked first (:func:`~cdc_jax.contribution.sweep_usage.check_withdrawal`):
  on a WithdrawalError nothing is written. ``run_fn(run_dir) -> exit status`` runs one prepared run
  (default: the experiment CLI in a subprocess that sees the same consent registry).
  """
  sweep_dir = Path(sweep_dir)
  records = sweep_usage.check_withdrawal([sweep_dir], community, records=records,
                                         manifest=manifest)
  consent_path = Path(consent_path) if consent_path else consent.default_registry_path()
  change = consent.record_withdrawal(community, records=records, reason=reason,
                                     path=consent_path)
  report = repair_sweep(sweep_dir, community, records=records, consents=change.consents,
                        consent_path=consent_path, workers=workers, rerun=rerun, run_fn=run_fn)
  return dataclasses.replace(report, change=change)


def repair_sweep(sweep_dir: str | os.PathLike, community: str, *, records: Sequence[str] | None,
                 consents: consent.Consents, consent_path: str | os.PathLike, workers: int = 1,
                 rerun: bool = True, run_fn: runner.RunFn | None = None) -> WithdrawalReport:
  """Marks the runs of ``sweep_dir`` that used withdrawn data stale and re-runs them without it."""
  sweep_dir = Path(sweep_dir)
  now = consent.utc_now()
  whole = records is None
  affected = sweep_usage.affected_runs(sweep_dir, community, consents, whole_community=whole)
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
      bindings += variants.community_bindings(manifests)
    if run_dir == item.run_dir:
      _archive(run_dir, now)
    experiment.write_run_config(run_dir, item.replacement, gin_files=config["gin_files"],
                                gin_bindings=bindings)
    todo[item.replacement.run_id] = run_dir
  run_fn = run_fn or runner.subprocess_runner(
      {**os.environ, consent.CONSENT_ENV: str(consent_path)})
  failed = runner.run_all(list(todo.values()), workers=workers, run_fn=run_fn, label="withdraw")
  runner.write_tables(sweep_dir)
  return WithdrawalReport(tuple(affected), tuple(todo.values()), tuple(reused), tuple(failed))


def restore_sweep(sweep_dir: str | os.PathLike, community: str,
                  consents: consent.Consents) -> list[Path]:
  """After a reinstatement: restores stale runs (of ``community``) that now pass the consent check.

  A run re-run in place (its stale outputs archived) keeps its new result.
  Returns the restored run directories; rewrites the results tables.
  """
  sweep_dir = Path(sweep_dir)
  restored = []
  for run_dir in sweep_usage.run_dirs(sweep_dir):
    note_path, stale = run_dir / STALE_FILENAME, run_dir / STALE_RESULT
    finished = (run_dir / results.RESULT_FILENAME).exists()
    if finished or not (note_path.is_file() and stale.is_file()):
      continue
    if json.loads(note_path.read_text()).get("community") != community:
      continue
    manifest = sweep_usage.run_manifest(run_dir)
    spec = experiment.CoalitionSpec.from_json(
        json.loads((run_dir / experiment.RUN_CONFIG).read_text())["spec"])
    evaluated = spec.evaluate_on or spec.members
    if manifest is None or consent.check_manifest(manifest, consents) or any(
        consents.of(c).withdrawn_at is not None for c in evaluated):
      continue
    os.replace(note_path, run_dir / f"STALE.reinstated-{consent.utc_now().replace(':', '')}.json")
    os.replace(stale, run_dir / results.RESULT_FILENAME)
    restored.append(run_dir)
  runner.write_tables(sweep_dir)
  return restored
