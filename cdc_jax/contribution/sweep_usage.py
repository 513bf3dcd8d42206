"""What a sweep's runs used: their communities, records and training manifests.

Everything a withdrawal checks before it writes (:func:`check_withdrawal`)
and which finished runs used withdrawn data (:func:`affected_runs`), with the
spec that replaces each (:func:`without`). Used by
:mod:`cdc_jax.contribution.withdraw`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

from cdc_jax.coalitions import experiment, results
from cdc_jax.contribution import consent, training_manifest
from cdc_jax.data import records as records_lib

CONSENT_DATA_DIR = ".consent"  # Filtered community copies under a sweep, one per withdrawal.


@dataclasses.dataclass(frozen=True)
class Affected:
  """A run that used withdrawn data, and what replaces it (None: nothing)."""
  run_dir: Path
  spec: experiment.CoalitionSpec
  why: str
  replacement: experiment.CoalitionSpec | None


class WithdrawalError(ValueError):
  """A withdrawal that names an unknown sweep, community or record; nothing was written."""


def run_manifest(run_dir: Path) -> dict[str, Any] | None:
  """The training manifest of a run directory's model, None if it has none."""
  try:
    return training_manifest.read_training_manifest(run_dir / "model")
  except FileNotFoundError:
    return None


def run_dirs(sweep_dir: Path) -> list[Path]:
  """The prepared run directories (with ``run.json``) of a sweep, sorted."""
  return sorted(p for p in sweep_dir.iterdir() if (p / experiment.RUN_CONFIG).is_file())


def check_sweep_dirs(sweep_dirs: Sequence[str | os.PathLike]) -> list[Path]:
  """The sweep directories, each checked to exist and hold runs; else WithdrawalError."""
  out = []
  for sweep_dir in map(Path, sweep_dirs):
    if not sweep_dir.is_dir():
      raise WithdrawalError(f"sweep directory {sweep_dir} does not exist")
    if not run_dirs(sweep_dir):
      raise WithdrawalError(f"{sweep_dir} holds no sweep runs (no */{experiment.RUN_CONFIG})")
    out.append(sweep_dir)
  return out


def known_communities(sweep_dirs: Sequence[Path]) -> dict[str, str | None]:
  """Community -> manifest path (None if unknown) of every community the sweeps' runs used."""
  known: dict[str, str | None] = {}
  for sweep_dir in sweep_dirs:
    for run_dir in run_dirs(sweep_dir):
      spec = experiment.CoalitionSpec.from_json(
          json.loads((run_dir / experiment.RUN_CONFIG).read_text())["spec"])
      for name in (*spec.members, *(spec.evaluate_on or ())):
        known.setdefault(name, None)
      manifest = run_manifest(run_dir)
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


def without(spec: experiment.CoalitionSpec, community: str) -> experiment.CoalitionSpec | None:
  """``spec`` without ``community`` (proportions renormalised); None if it was the only member."""
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
    manifest = run_manifest(run_dir)
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
      replacement = without(spec, community) if whole_community else spec
      out.append(Affected(run_dir, spec, "; ".join(dict.fromkeys(why)), replacement))
  return out
