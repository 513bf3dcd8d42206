"""The training manifest: what each training run used.

:func:`write_training_manifest` (called by training right after task
registration) writes ``<model_dir>/training_manifest.json``: the task or
mixture, its tasks, and per community the manifest path, levels, formats,
every training record used (id -> SHA-256 of its canonical JSON), the privacy
budgets (``eps``) and selection policies recorded in the records' provenance;
plus the vocabulary and the communities whose text trained it. A restarted run
whose data changed keeps the earlier manifests under ``previous``.

Before writing, the manifest is checked against the consent registry
(:mod:`cdc_jax.contribution.consent`): training refuses withdrawn data.
``python -m cdc_jax.audit CHECKPOINT`` checks a checkpoint's manifest later.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from cdc_jax import io as io_lib
from cdc_jax import names
from cdc_jax.contribution import consent
from cdc_jax.data import records as records_lib

MANIFEST_FILENAME = "training_manifest.json"
_VERSION = 1
_VOLATILE = ("created", "previous")


def record_hash(record: records_lib.TraceRecord) -> str:
  """SHA-256 of the record's canonical JSON (any change to any field changes it)."""
  text = json.dumps(record.to_json(), sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _leaf_tasks(mixture_or_task_name: str) -> list[str]:
  import seqio

  if mixture_or_task_name in seqio.MixtureRegistry.names():
    return sorted(t.name for t in seqio.get_mixture_or_task(mixture_or_task_name).tasks)
  seqio.get_mixture_or_task(mixture_or_task_name)  # Raises for an unknown name.
  return [mixture_or_task_name]


def _registered_communities() -> dict[str, str]:
  """Community -> manifest path of every community registered in this process."""
  import seqio
  from cdc_jax.tasks import registry

  out = {}
  for task in seqio.TaskRegistry.names():
    try:
      community = names.parse_task_name(task)[0]
      out[community] = str(registry.registered_community(community).manifest_path)
    except ValueError:  # Not a cdc task, or registered outside cdc_jax.tasks.registry.
      continue
  return dict(sorted(out.items()))


def _distinct(values: Iterable[Any]) -> list[Any]:
  seen = []
  for v in values:
    if v not in seen:
      seen.append(v)
  return sorted(seen, key=lambda v: json.dumps(v, sort_keys=True))


def training_manifest(mixture_or_task_name: str) -> dict[str, Any]:
  """The manifest of training on a registered task or mixture (see module docstring)."""
  from cdc_jax.tasks import catalog, formats, registry

  tasks = _leaf_tasks(mixture_or_task_name)
  used: dict[str, dict[str, Any]] = {}
  other_tasks = []
  for task in tasks:
    try:
      community, level, fmt, part = names.parse_task_name(task)
    except ValueError:
      other_tasks.append(task)
      continue
    entry = used.setdefault(community, {"tasks": [], "uses": []})
    entry["tasks"].append(task)
    entry["uses"].append((level, formats.needs_rationale(fmt, part), fmt))
  communities = {}
  for community, entry in sorted(used.items()):
    info = registry.registered_community(community)
    data = records_lib.load_community(info.manifest_path)
    train = data.records.get("train", ())
    chosen = [r for r in train if any(not needs or level in r.rationales
                                      for level, needs, _ in entry["uses"])]
    provenance = [r.provenance for r in chosen]
    communities[community] = {
        "manifest": str(info.manifest_path), "split": "train", "tasks": entry["tasks"],
        "levels": sorted({lv for lv, _, _ in entry["uses"]}),
        "formats": sorted({f for _, _, f in entry["uses"]}),
        "num_records": len(chosen), "records": {r.id: record_hash(r) for r in chosen},
        "eps": _distinct(p["privacy"].get("eps") for p in provenance if "privacy" in p),
        "privacy": _distinct(p["privacy"] for p in provenance if "privacy" in p),
        "selection": _distinct(p["selection"] for p in provenance if "selection" in p),
    }
  vocabulary = catalog.process_vocabulary()
  return {
      "version": _VERSION, "created": consent.utc_now(),
      "mixture_or_task_name": mixture_or_task_name,
      "tasks": tasks, "other_tasks": other_tasks, "communities": communities,
      "eps": _distinct(e for c in communities.values() for e in c["eps"]),
      "selection": _distinct(s for c in communities.values() for s in c["selection"]),
      "vocabulary": {"model": getattr(vocabulary, "sentencepiece_model_file", None),
                     "communities": _registered_communities()},
  }


def _content(manifest: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in manifest.items() if k not in _VOLATILE}


def write_training_manifest(model_dir: str | os.PathLike, mixture_or_task_name: str, *,
                            registry_path: str | os.PathLike | None = None,
                            enforce: bool = True, write: bool = True) -> Path:
  """Computes the manifest, checks it against current consents, writes it.

  Args:
    model_dir: the run's model directory.
    mixture_or_task_name: what the run trains on (registered).
    registry_path: the consent registry (default
      :func:`~cdc_jax.contribution.consent.default_registry_path`).
    enforce: raise :class:`~cdc_jax.contribution.consent.ConsentError` if
      withdrawn records would be used.
    write: write the file (only process 0 of a multi-host run does).

  Returns the manifest's path.
  """
  manifest = training_manifest(mixture_or_task_name)
  if enforce:
    violations = consent.check_manifest(manifest, consent.read_consents(registry_path))
    if violations:
      raise consent.ConsentError(f"refusing to train {mixture_or_task_name} in {model_dir}: "
                                 + consent.format_violations(violations))
  path = Path(model_dir) / MANIFEST_FILENAME
  if not write:
    return path
  if path.exists():
    old = json.loads(path.read_text())
    if _content(old) == _content(manifest):
      return path
    manifest["previous"] = [_content(old), *old.get("previous", [])]
  io_lib.atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
  return path


def find_training_manifest(path: str | os.PathLike) -> Path:
  """The manifest of a model dir, its checkpoints dir, a step dir, or the file itself."""
  path = Path(path).absolute()
  if path.is_file():
    return path
  for directory in (path, path.parent, path.parent.parent):
    candidate = directory / MANIFEST_FILENAME
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(f"no {MANIFEST_FILENAME} at {path} or its two parent directories "
                          "(was it trained before manifests existed?)")


def read_training_manifest(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a training manifest (see :func:`find_training_manifest` for ``path``)."""
  return consent.read_json_with_communities(find_training_manifest(path), "an object")
