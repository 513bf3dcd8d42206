"""Consent: what each training run used, and which contributions have been withdrawn.

**Training manifest.** :func:`write_training_manifest` (called by
:func:`cdc_jax.train.train` right after task registration) writes
``<model_dir>/training_manifest.json``: the task or mixture, its tasks, and per
community the manifest path, levels, formats, every training record used
(id -> SHA-256 of its canonical JSON), the privacy budgets (``eps``) and
selection policies recorded in the records' provenance; plus the vocabulary
and the communities whose text trained it. A restarted run whose data changed
keeps the earlier manifests under ``previous``.

**Consent registry.** One JSON file (``$CDC_CONSENT_REGISTRY``, default
``$CDC_CACHE_DIR/consent.json``)::

  {"version": 1, "communities": {"strategy": {
      "withdrawn_at": "2025-01-02T03:04:05Z",        # whole community, or null
      "reason": "...",
      "records": {"train17": "2025-01-02T03:04:05Z"}}},  # record-level withdrawals
   "ledger": [{"at": "2025-01-02T03:04:05Z", "action": "withdraw",   # or "reinstate"
               "community": "strategy", "records": ["train17"], "reason": "..."}]}

``communities`` is the current state; ``ledger`` lists every withdrawal and
every reinstatement (:func:`reinstate`, the undo) in order, with the records
each one changed. The file is replaced atomically.

Training refuses (:class:`ConsentError`) to start on withdrawn data;
``python -m cdc_jax.withdraw`` withdraws and re-runs a sweep's affected runs;
``python -m cdc_jax.audit CHECKPOINT`` checks a checkpoint's manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cdc_jax import names
from cdc_jax.data import records as records_lib

MANIFEST_FILENAME = "training_manifest.json"
CONSENT_ENV = "CDC_CONSENT_REGISTRY"
_VERSION = 1
_VOLATILE = ("created", "previous")


class ConsentError(RuntimeError):
  """Training data includes contributions that were withdrawn."""


def utc_now() -> str:
  """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_hash(record: records_lib.TraceRecord) -> str:
  """SHA-256 of the record's canonical JSON (any change to any field changes it)."""
  text = json.dumps(record.to_json(), sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# The training manifest.


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
      "version": _VERSION, "created": utc_now(), "mixture_or_task_name": mixture_or_task_name,
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
    registry_path: the consent registry (default :func:`default_registry_path`).
    enforce: raise :class:`ConsentError` if withdrawn records would be used.
    write: write the file (only process 0 of a multi-host run does).

  Returns the manifest's path.
  """
  manifest = training_manifest(mixture_or_task_name)
  if enforce:
    violations = check_manifest(manifest, read_consents(registry_path))
    if violations:
      raise ConsentError(f"refusing to train {mixture_or_task_name} in {model_dir}: "
                         + format_violations(violations))
  path = Path(model_dir) / MANIFEST_FILENAME
  if not write:
    return path
  if path.exists():
    old = json.loads(path.read_text())
    if _content(old) == _content(manifest):
      return path
    manifest["previous"] = [_content(old), *old.get("previous", [])]
  records_lib.atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
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
  file = find_training_manifest(path)
  try:
    manifest = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}:{e.lineno}: invalid JSON: {e.msg}") from None
  if not isinstance(manifest, dict) or not isinstance(manifest.get("communities"), dict):
    raise ValueError(f"{file}: field 'communities': expected an object")
  return manifest


# ---------------------------------------------------------------------------
# The consent registry.


@dataclasses.dataclass(frozen=True)
class CommunityConsent:
  """Withdrawals of one community: whole (``withdrawn_at``) and per record."""
  withdrawn_at: str | None = None
  reason: str | None = None
  records: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def withdrawn(self, record_id: str) -> str | None:
    """When ``record_id`` was withdrawn (the community's time first), or None."""
    return self.withdrawn_at or self.records.get(record_id)


@dataclasses.dataclass(frozen=True)
class Consents:
  """The consent registry: community -> its withdrawals, and the ledger of changes."""
  communities: Mapping[str, CommunityConsent] = dataclasses.field(default_factory=dict)
  ledger: tuple[Mapping[str, Any], ...] = ()

  def of(self, community: str) -> CommunityConsent:
    """The withdrawals of ``community`` (none if it never withdrew anything)."""
    return self.communities.get(community, CommunityConsent())

  def to_json(self) -> dict[str, Any]:
    """The registry file's JSON object."""
    return {"version": _VERSION, "communities": {
        name: {"withdrawn_at": c.withdrawn_at, "reason": c.reason,
               "records": dict(sorted(c.records.items()))}
        for name, c in sorted(self.communities.items())},
            "ledger": [dict(event) for event in self.ledger]}


def default_registry_path() -> Path:
  """``$CDC_CONSENT_REGISTRY``, else ``$CDC_CACHE_DIR/consent.json``."""
  from cdc_jax.tasks import vocabulary

  value = os.environ.get(CONSENT_ENV)
  return Path(value) if value else vocabulary.default_cache_dir() / "consent.json"


def read_consents(path: str | os.PathLike | None = None) -> Consents:
  """Reads the registry (an absent file means nothing was withdrawn)."""
  path = Path(path) if path is not None else default_registry_path()
  if not path.exists():
    return Consents()
  try:
    obj = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
  if not isinstance(obj, dict) or not isinstance(obj.get("communities"), dict):
    raise ValueError(f"{path}: field 'communities': expected an object community -> consent")
  out = {}
  for name, entry in obj["communities"].items():
    if not isinstance(entry, dict) or not isinstance(entry.get("records", {}), dict):
      raise ValueError(f"{path}: field 'communities.{name}': expected "
                       "{'withdrawn_at': time|null, 'reason': text|null, 'records': {id: time}}")
    out[name] = CommunityConsent(entry.get("withdrawn_at"), entry.get("reason"),
                                 dict(entry.get("records", {})))
  ledger = obj.get("ledger", [])
  if not isinstance(ledger, list) or not all(isinstance(e, dict) for e in ledger):
    raise ValueError(f"{path}: field 'ledger': expected a list of events")
  return Consents(out, tuple(ledger))


@dataclasses.dataclass(frozen=True)
class ConsentChange:
  """What one withdrawal or reinstatement changed in the registry (true counts)."""
  consents: Consents
  community: str
  action: str
  whole_community: bool
  changed: tuple[str, ...]  # Record ids whose state changed.
  unchanged: tuple[str, ...]  # Record ids asked for that were already in that state.
  already_whole: bool = False  # A whole-community withdrawal that was already recorded.


def _write(path: Path, consents: Consents) -> None:
  records_lib.atomic_write_text(path, json.dumps(consents.to_json(), indent=1) + "\n")


def record_withdrawal(community: str, *, records: Sequence[str] | None = None,
                      reason: str | None = None, path: str | os.PathLike | None = None,
                      now: str | None = None) -> ConsentChange:
  """Records a withdrawal (the whole community if ``records`` is None) and a ledger event.

  The caller checks that the community and records exist (:mod:`cdc_jax.withdraw`
  does, before anything is written). Earlier timestamps are kept.
  """
  names.validate_name(community)
  path = Path(path) if path is not None else default_registry_path()
  now = now or utc_now()
  consents = read_consents(path)
  current = consents.of(community)
  if records is None:
    changed, unchanged = (), ()
    was_whole = current.withdrawn_at is not None
    updated = dataclasses.replace(current, withdrawn_at=current.withdrawn_at or now,
                                  reason=reason or current.reason)
  else:
    records = list(dict.fromkeys(records))
    if not records:
      raise ValueError("records= names no record; pass None to withdraw the whole community")
    changed = tuple(r for r in records if r not in current.records)
    unchanged = tuple(r for r in records if r in current.records)
    was_whole = False
    merged = dict(current.records)
    for record_id in changed:
      merged[record_id] = now
    updated = dataclasses.replace(current, records=merged, reason=reason or current.reason)
  event = {"at": now, "action": "withdraw", "community": community,
           "records": None if records is None else list(changed), "reason": reason}
  if records is None and was_whole:
    event["note"] = f"already withdrawn entirely at {current.withdrawn_at}"
  consents = Consents({**consents.communities, community: updated}, (*consents.ledger, event))
  _write(path, consents)
  return ConsentChange(consents, community, "withdraw", records is None, changed, unchanged,
                       already_whole=records is None and was_whole)


def withdraw(community: str, *, records: Sequence[str] | None = None, reason: str | None = None,
             path: str | os.PathLike | None = None, now: str | None = None) -> Consents:
  """Records a withdrawal: the whole community (``records`` None) or some records.

  Returns the updated registry, written atomically (see :func:`record_withdrawal`).
  """
  return record_withdrawal(community, records=records, reason=reason, path=path, now=now).consents


def reinstate(community: str, *, records: Sequence[str] | None = None, reason: str | None = None,
              path: str | os.PathLike | None = None, now: str | None = None) -> ConsentChange:
  """Undoes a withdrawal: the whole-community one (``records`` None) or those records'.

  Recorded in the ledger as a ``reinstate`` event. Raises ValueError, writing
  nothing, if there is no such withdrawal to undo.
  """
  names.validate_name(community)
  path = Path(path) if path is not None else default_registry_path()
  now = now or utc_now()
  consents = read_consents(path)
  current = consents.of(community)
  if records is None:
    if current.withdrawn_at is None:
      raise ValueError(f"community {community!r} has not withdrawn entirely (record-level "
                       f"withdrawals: {len(current.records)}; undo those with records=)")
    changed: tuple[str, ...] = ()
    updated = dataclasses.replace(current, withdrawn_at=None)
  else:
    records = list(dict.fromkeys(records))
    if not records:
      raise ValueError("records= names no record; pass None to reinstate the whole community")
    missing = [r for r in records if r not in current.records]
    if missing:
      raise ValueError(f"record(s) {', '.join(missing[:10])} of {community!r} are not withdrawn "
                       f"({len(current.records)} withdrawn record(s))")
    changed = tuple(records)
    updated = dataclasses.replace(
        current, records={k: v for k, v in current.records.items() if k not in set(records)})
  event = {"at": now, "action": "reinstate", "community": community,
           "records": None if records is None else list(changed), "reason": reason}
  communities = dict(consents.communities)
  if updated.withdrawn_at is None and not updated.records:
    communities.pop(community, None)  # Nothing withdrawn any more; the ledger keeps the history.
  else:
    communities[community] = updated
  consents = Consents(communities, (*consents.ledger, event))
  _write(path, consents)
  return ConsentChange(consents, community, "reinstate", records is None, changed, ())


# ---------------------------------------------------------------------------
# Checks.


@dataclasses.dataclass(frozen=True)
class Violation:
  """Withdrawn records of one community that a manifest used."""
  community: str
  record_ids: tuple[str, ...]
  whole_community: bool
  withdrawn_at: str


def check_manifest(manifest: Mapping[str, Any], consents: Consents, *,
                   community: str | None = None) -> list[Violation]:
  """The withdrawn records a training manifest (and its ``previous`` ones) used.

  ``community`` restricts the check to one community.
  """
  used: dict[str, set[str]] = collections.defaultdict(set)
  for entry in [manifest, *manifest.get("previous", [])]:
    for name, info in entry.get("communities", {}).items():
      used[name].update(info.get("records", {}))
  out = []
  for name in sorted(used):
    if community is not None and name != community:
      continue
    consent = consents.of(name)
    if consent.withdrawn_at is not None:
      out.append(Violation(name, tuple(sorted(used[name])), True, consent.withdrawn_at))
      continue
    hits = sorted(i for i in used[name] if i in consent.records)
    if hits:
      out.append(Violation(name, tuple(hits), False,
                           max(consent.records[i] for i in hits)))
  return out


def vocabulary_withdrawals(manifest: Mapping[str, Any], consents: Consents) -> list[str]:
  """Withdrawn communities whose text trained the run's vocabulary (not its examples)."""
  registered = manifest.get("vocabulary", {}).get("communities", {})
  return sorted(c for c in registered if consents.of(c).withdrawn_at is not None)


def format_violations(violations: Sequence[Violation], *, limit: int | None = 20) -> str:
  """Human-readable lines naming the withdrawn records (``limit`` ids per community)."""
  lines = []
  for v in violations:
    what = "withdrew entirely" if v.whole_community else "withdrew records"
    ids = list(v.record_ids) if limit is None else list(v.record_ids[:limit])
    more = len(v.record_ids) - len(ids)
    lines.append(f"community {v.community!r} {what} (at {v.withdrawn_at}); "
                 f"{len(v.record_ids)} withdrawn record(s) used: {', '.join(ids)}"
                 + (f" ... (+{more} more)" if more else ""))
  return "\n".join(lines)


def filter_community(source: str | os.PathLike, out_dir: str | os.PathLike,
                     consents: Consents) -> tuple[Path, int]:
  """Writes ``source`` without its withdrawn records; returns (manifest path, records dropped).

  Raises if the whole community withdrew (there is nothing to keep).
  """
  community = records_lib.load_community(source)
  consent = consents.of(community.name)
  if consent.withdrawn_at is not None:
    raise ConsentError(f"community {community.name!r} withdrew entirely at "
                       f"{consent.withdrawn_at}: nothing to keep")
  kept = {split: [r for r in recs if r.id not in consent.records]
          for split, recs in community.records.items()}
  dropped = sum(len(v) for v in community.records.values()) - sum(len(v) for v in kept.values())
  return records_lib.write_community(out_dir, community.manifest, kept), dropped
