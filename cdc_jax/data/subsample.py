r"""A fixed random subset of a community's splits: experiments sized to the compute at hand.

  python -m cdc_jax.data.subsample --split_sizes=train=300,test=200 --seed=0 \
      DATA_ROOT/strategyqa DATA_ROOT/csqa --out=SMALL_ROOT

Each split keeps ``n`` records drawn uniformly without replacement by a
generator seeded with ``--seed`` and the community and split names (so adding
a community does not change another's subset), in their original order.
A split smaller than its size is kept whole and said so; splits not named are
kept whole. The subset is chosen before any run and from the seed alone: it
cannot be picked for an effect. The new manifest's description names the
source and the seed, and ``subsample.json`` beside it records the counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cdc_jax import arguments
from cdc_jax import io as io_lib
from cdc_jax.data import records as records_lib

REPORT_FILENAME = "subsample.json"


@dataclasses.dataclass(frozen=True)
class SubsampleReport:
  """Records per split before and after, for one community."""
  community: str
  source: str
  seed: int
  read: Mapping[str, int]
  kept: Mapping[str, int]

  def __str__(self) -> str:
    parts = ", ".join(f"{s} {self.kept[s]} of {self.read[s]}" for s in self.read)
    return f"{self.community}: kept {parts} (seed {self.seed}, from {self.source})"


def _generator(seed: int, community: str, split: str) -> np.random.Generator:
  digest = hashlib.sha256(f"{seed}/{community}/{split}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def subsample_community(source: str | Path, out: str | Path, *, sizes: Mapping[str, int],
                        seed: int = 0) -> SubsampleReport:
  """Writes ``out``: the community at ``source`` with each split in ``sizes`` cut to its size."""
  community = records_lib.load_community(source)
  unknown = set(sizes) - set(community.records)
  if unknown:
    raise ValueError(f"{community.directory}: no split {sorted(unknown)} to subsample "
                     f"(it has {sorted(community.records)})")
  kept = {}
  for split, recs in community.records.items():
    n = sizes.get(split)
    if n is None or n >= len(recs):
      if n is not None:
        print(f"{community.name}/{split}: {len(recs)} records, fewer than {n}: kept whole",
              file=sys.stderr)
      kept[split] = list(recs)
      continue
    index = np.sort(_generator(seed, community.name, split).choice(len(recs), n, replace=False))
    kept[split] = [recs[i] for i in index]
  manifest = dataclasses.replace(
      community.manifest, description=f"{community.manifest.description} (random subset, "
      f"seed {seed}, of {community.directory})")
  records_lib.write_community(out, manifest, kept)
  report = SubsampleReport(community=community.name, source=str(community.directory), seed=seed,
                           read={s: len(r) for s, r in community.records.items()},
                           kept={s: len(r) for s, r in kept.items()})
  io_lib.atomic_write_text(Path(out) / REPORT_FILENAME,
                                json.dumps(dataclasses.asdict(report), indent=2) + "\n")
  return report


def parse_sizes(text: str) -> dict[str, int]:
  """'train=300,test=200' -> {'train': 300, 'test': 200}."""
  sizes = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    split, sep, n = part.partition("=")
    if not sep or not n.strip().isdigit() or int(n) < 1:
      raise ValueError(f"--split_sizes: {part!r} is not SPLIT=N with N a positive integer")
    sizes[split.strip()] = int(n)
  if not sizes:
    raise ValueError("--split_sizes: give at least one SPLIT=N")
  return sizes


def main(argv: Sequence[str] | None = None) -> int:
  """CLI; returns the exit status (1 with a message on bad input)."""
  parser = argparse.ArgumentParser(prog="python -m cdc_jax.data.subsample",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("communities", nargs="+", help="community directories")
  parser.add_argument("--out", required=True, help="root of the subsets (one directory each)")
  parser.add_argument("--split_sizes", required=True, help="e.g. train=300,test=200")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  def run():
    sizes = parse_sizes(args.split_sizes)
    for path in args.communities:
      name = records_lib.read_manifest(Path(path) / records_lib.MANIFEST_FILENAME
                                       if Path(path).is_dir() else path).name
      print(subsample_community(path, Path(args.out) / name, sizes=sizes, seed=args.seed))
  return arguments.exit_status(run)

if __name__ == "__main__":
  sys.exit(main())
