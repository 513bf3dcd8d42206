r"""Audit a checkpoint against current consents.

    python -m cdc_jax.audit CHECKPOINT [--consent FILE] [--all]

CHECKPOINT is a model dir, its ``checkpoints`` dir, a step dir or a
``training_manifest.json``. Reads the run's training manifest (written when
it trained) and the consent registry (:func:`cdc_jax.contribution.audit.audit`),
and exits

- 0: no withdrawn record was used (``AUDIT OK``);
- 1: withdrawn records were used: ``AUDIT FAILED`` names each community and
  the withdrawn records (``--all`` lists every id, default the first 20);
- 2: the checkpoint has no readable training manifest (it cannot be audited).

Communities that withdrew but only shaped the vocabulary (their text was
registered, their records not trained on) are reported as a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cdc_jax.contribution import audit as audit_lib
from cdc_jax.contribution import consent


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (see module docstring)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("checkpoint", type=Path)
  parser.add_argument("--consent", type=Path, default=None,
                      help=f"consent registry (default ${consent.CONSENT_ENV} or the cache's)")
  parser.add_argument("--all", action="store_true", help="list every withdrawn record id")
  args = parser.parse_args(argv)
  try:
    result = audit_lib.audit(args.checkpoint, consent_path=args.consent)
  except (FileNotFoundError, ValueError) as e:
    print(f"AUDIT IMPOSSIBLE: {args.checkpoint}: {e}", file=sys.stderr)
    return 2
  for community in result.vocabulary_withdrawn:
    print(f"warning: withdrawn community {community!r} was registered when this run's "
          "vocabulary was built", file=sys.stderr)
  if result.ok:
    print(f"AUDIT OK: {args.checkpoint}: {result.records} training records of "
          f"{len(result.communities)} communities ({', '.join(result.communities)}); "
          f"none withdrawn ({result.manifest_path})")
    return 0
  used = sum(len(v.record_ids) for v in result.violations)
  print(f"AUDIT FAILED: {args.checkpoint} was trained on {used} withdrawn record(s) "
        f"(manifest {result.manifest_path}):", file=sys.stderr)
  text = consent.format_violations(result.violations, limit=None if args.all else 20)
  for line in text.splitlines():
    print(f"  {line}", file=sys.stderr)
  return 1


if __name__ == "__main__":
  sys.exit(main())
