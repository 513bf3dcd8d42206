"""Consent: which contributions have been withdrawn, and checks of what runs used.

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

What a run trained on is its training manifest
(:mod:`cdc_jax.contribution.training_manifest`); :func:`check_manifest` names
the withdrawn records it used. Training refuses (:class:`ConsentError`) to
start on withdrawn data; ``python -m cdc_jax.withdraw`` withdraws and re-runs
a sweep's affected runs; ``python -m cdc_jax.audit CHECKPOINT`` checks a
checkpoint's manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cdc_jax import io as io_lib
from cdc_jax import names
from cdc_jax.data import records as records_lib

CONSENT_ENV = "CDC_CONSENT_REGISTRY"
_VERSION = 1


class ConsentError(RuntimeError):
  """Training data includes contributions that were withdrawn."""


def utc_now() -> str:
  """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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

  value = os.environ.get(CONSENT_ENV)
  return Path(value) if value else io_lib.default_cache_dir() / "consent.json"


def read_json_with_communities(path: Path, expected: str) -> dict[str, Any]:
  """A JSON object whose ``communities`` field is an object (registry, training manifest).

  Raises :class:`~cdc_jax.io.SchemaError` naming the file (and line of invalid JSON).
  """
  try:
    obj = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise io_lib.SchemaError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None
  if not isinstance(obj, dict) or not isinstance(obj.get("communities"), dict):
    raise io_lib.SchemaError(path, None, "communities", f"expected {expected}")
  return obj


def read_consents(path: str | os.PathLike | None = None) -> Consents:
  """Reads the registry (an absent file means nothing was withdrawn)."""
  path = Path(path) if path is not None else default_registry_path()
  if not path.exists():
    return Consents()
  obj = read_json_with_communities(path, "an object community -> consent")
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


def _distinct_records(records: Sequence[str], action: str) -> list[str]:
  records = list(dict.fromkeys(records))
  if not records:
    raise ValueError(f"records= names no record; pass None to {action} the whole community")
  return records


def _change(community: str, action: str, *, records: Sequence[str] | None, reason: str | None,
            path: str | os.PathLike | None, now: str | None,
            update: Callable[[CommunityConsent, str], tuple[CommunityConsent, dict[str, Any]]],
            ) -> Consents:
  """Reads the registry, applies ``update`` to ``community``, appends the event, writes.

  ``update(current, now)`` returns the community's new state and what the
  ledger event adds (its ``records``, a ``note``); it raises to write nothing.
  A community with nothing withdrawn any more leaves ``communities`` (the
  ledger keeps its history).
  """
  names.validate_name(community)
  path = Path(path) if path is not None else default_registry_path()
  now = now or utc_now()
  consents = read_consents(path)
  updated, extra = update(consents.of(community), now)
  event = {"at": now, "action": action, "community": community,
           "records": None if records is None else [], "reason": reason, **extra}
  communities = dict(consents.communities)
  if updated.withdrawn_at is None and not updated.records:
    communities.pop(community, None)
  else:
    communities[community] = updated
  consents = Consents(communities, (*consents.ledger, event))
  io_lib.atomic_write_text(path, json.dumps(consents.to_json(), indent=1) + "\n")
  return consents


def record_withdrawal(community: str, *, records: Sequence[str] | None = None,
                      reason: str | None = None, path: str | os.PathLike | None = None,
                      now: str | None = None) -> ConsentChange:
  """Records a withdrawal (the whole community if ``records`` is None) and a ledger event.

  The caller checks that the community and records exist (``python -m
  cdc_jax.withdraw`` does, before anything is written). Earlier timestamps are kept.
  """
  records = None if records is None else _distinct_records(records, "withdraw")
  outcome = {}

  def update(current: CommunityConsent, now: str):
    if records is None:
      outcome.update(changed=(), unchanged=(), was_whole=current.withdrawn_at is not None)
      extra = ({"note": f"already withdrawn entirely at {current.withdrawn_at}"}
               if outcome["was_whole"] else {})
      return dataclasses.replace(current, withdrawn_at=current.withdrawn_at or now,
                                 reason=reason or current.reason), extra
    changed = tuple(r for r in records if r not in current.records)
    outcome.update(changed=changed, unchanged=tuple(r for r in records if r in current.records),
                   was_whole=False)
    merged = {**current.records, **{record_id: now for record_id in changed}}
    return (dataclasses.replace(current, records=merged, reason=reason or current.reason),
            {"records": list(changed)})

  consents = _change(community, "withdraw", records=records, reason=reason, path=path, now=now,
                     update=update)
  return ConsentChange(consents, community, "withdraw", records is None, outcome["changed"],
                       outcome["unchanged"], already_whole=outcome["was_whole"])


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
  records = None if records is None else _distinct_records(records, "reinstate")

  def update(current: CommunityConsent, now: str):
    del now  # A reinstatement keeps no timestamp but its ledger event's.
    if records is None:
      if current.withdrawn_at is None:
        raise ValueError(f"community {community!r} has not withdrawn entirely (record-level "
                         f"withdrawals: {len(current.records)}; undo those with records=)")
      return dataclasses.replace(current, withdrawn_at=None), {}
    missing = [r for r in records if r not in current.records]
    if missing:
      raise ValueError(f"record(s) {', '.join(missing[:10])} of {community!r} are not withdrawn "
                       f"({len(current.records)} withdrawn record(s))")
    kept = {k: v for k, v in current.records.items() if k not in set(records)}
    return dataclasses.replace(current, records=kept), {"records": list(records)}

  consents = _change(community, "reinstate", records=records, reason=reason, path=path, now=now,
                     update=update)
  return ConsentChange(consents, community, "reinstate", records is None, tuple(records or ()),
                       ())


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
