"""Audit a checkpoint against current consents.

:func:`audit` reads a run's training manifest
(:mod:`cdc_jax.contribution.training_manifest`) and the consent registry and
says which withdrawn records the run used, and which withdrawn communities
only shaped its vocabulary (their text was registered, their records not
trained on). ``python -m cdc_jax.audit CHECKPOINT`` is its command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cdc_jax.contribution import consent, training_manifest


@dataclasses.dataclass(frozen=True)
class AuditResult:
  """What an audit found."""
  manifest_path: Path
  communities: tuple[str, ...]
  records: int
  violations: tuple[consent.Violation, ...]
  vocabulary_withdrawn: tuple[str, ...]

  @property
  def ok(self) -> bool:
    """No withdrawn record was used."""
    return not self.violations


def audit(checkpoint: str | Path, *, consent_path: str | Path | None = None) -> AuditResult:
  """Checks the training manifest of ``checkpoint`` against the consent registry."""
  manifest_path = training_manifest.find_training_manifest(checkpoint)
  manifest = training_manifest.read_training_manifest(manifest_path)
  consents = consent.read_consents(consent_path)
  communities = manifest["communities"]
  return AuditResult(manifest_path, tuple(sorted(communities)),
                     sum(len(c.get("records", {})) for c in communities.values()),
                     tuple(consent.check_manifest(manifest, consents)),
                     tuple(consent.vocabulary_withdrawals(manifest, consents)))
