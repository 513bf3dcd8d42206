r"""Withdraw a community's contribution from a sweep: mark affected runs stale, re-run without it.

    python -m cdc_jax.withdraw --community strategy --sweep runs/demo \
        [--records id1,id2] [--reason TEXT] [--consent FILE] [--workers 2] [--no_rerun] \
        [--manifest DIR]
    python -m cdc_jax.withdraw --undo --community strategy [--records id1,id2] [--sweep runs/demo]

Checks everything before writing anything (each ``--sweep`` is a sweep
directory, the community is one its runs used or ``--manifest`` names it,
every record id exists); records the withdrawal in the consent registry with
a ledger event (the counts printed are of records whose state changed, ids
already withdrawn counted apart); marks each sweep's runs that used the
withdrawn data stale and re-runs them without it; rewrites the results
tables. Steps and files: :mod:`cdc_jax.contribution.withdraw`.

``--undo`` reinstates the withdrawal (the whole community's, or the records
named) with a ``reinstate`` event in the ledger, and in each ``--sweep``
restores the results of stale runs that now pass the consent check
(``result.stale.json`` back to ``result.json``). Runs re-run in place
without withdrawn records keep their new results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cdc_jax.contribution import consent, sweep_usage, withdraw


def _undo(args: argparse.Namespace, records: list[str] | None) -> int:
  sweeps = sweep_usage.check_sweep_dirs(args.sweep or [])
  change = consent.reinstate(args.community, records=records, reason=args.reason,
                             path=args.consent)
  what = (f"{len(change.changed)} record(s) of {args.community}" if records is not None
          else f"community {args.community} (its whole-community withdrawal)")
  print(f"reinstated {what}; recorded in the consent ledger")
  for sweep_dir in sweeps:
    restored = withdraw.restore_sweep(sweep_dir, args.community, change.consents)
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
    records = sweep_usage.check_withdrawal(args.sweep, args.community, records=records,
                                           manifest=args.manifest)
  except ValueError as e:
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
    report = withdraw.repair_sweep(sweep_dir, args.community, records=records,
                                   consents=change.consents, consent_path=consent_path,
                                   workers=args.workers, rerun=not args.no_rerun)
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
