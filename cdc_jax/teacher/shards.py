"""Sharded, resumable output of the teacher launcher.

A shard is the input records :func:`shard_assignment` deals it (by a stable
hash of their ids), kept in input order and cut into numbered chunks of
``chunk_size``. While a shard runs, each finished chunk is committed to
``<out>/traces-SSSSS-of-NNNNN.parts/`` as two files, each written to a temp
file and renamed:

  chunk-CCCCC.side.json   its failures and timing (written first)
  chunk-CCCCC.jsonl       its records (the commit: a chunk is done iff this exists)

A SIGKILL at any moment leaves whole chunks and at most a stray ``.tmp``
file, which the next run removes. Re-running the same command skips the done
chunks (chunks are numbered over a deterministic order, so the output equals
an uninterrupted run's) and refuses to resume a parts directory written with
different settings. When every chunk is done the shard is finalised:
``traces-SSSSS-of-NNNNN.meta.json`` (settings, counts, failures, timing) and
then ``traces-SSSSS-of-NNNNN.jsonl`` (the commit) are written atomically and
the parts directory is removed. A shard is complete iff its ``.jsonl`` exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from cdc_jax import io as io_lib
from cdc_jax.data import records as records_lib

_SHARD_RE = re.compile(r"traces-(\d{5})-of-(\d{5})\.(jsonl|meta\.json|parts)\Z")
_CHUNK_RE = re.compile(r"chunk-(\d{5})\.jsonl\Z")
T = TypeVar("T")


def shard_stem(shard_index: int, num_shards: int) -> str:
  """``traces-SSSSS-of-NNNNN`` (validates the pair)."""
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
  return f"traces-{shard_index:05d}-of-{num_shards:05d}"


def check_shard_flags(shard_index: int, num_shards: int, *, chunk_size: int = 1) -> None:
  """Raises a ValueError naming the flag unless the shard flags make sense.

  >>> check_shard_flags(2, 2)
  Traceback (most recent call last):
  ...
  ValueError: --shard_index=2 is out of range for --num_shards=2 (expected 0..1)
  """
  if num_shards < 1:
    raise ValueError(f"--num_shards={num_shards}: expected at least 1")
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"--shard_index={shard_index} is out of range for --num_shards={num_shards} "
                     f"(expected 0..{num_shards - 1})")
  if chunk_size < 1:
    raise ValueError(f"--chunk_size={chunk_size}: expected at least 1")


def _id_hash(record_id: str) -> bytes:
  return hashlib.sha256(record_id.encode("utf-8")).digest()


def shard_assignment(ids: Iterable[str], num_shards: int) -> dict[str, int]:
  """id -> shard: ids ranked by a stable hash (not Python's salted ``hash``), dealt round-robin.

  Shards differ in size by at most one, and the assignment depends only on
  the set of ids, not on their order in the input.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  ranked = sorted(set(ids), key=lambda i: (_id_hash(i), i))
  return {record_id: rank % num_shards for rank, record_id in enumerate(ranked)}


def select_shard(items: Sequence[T], shard_index: int, num_shards: int, *,
                 key: Any = lambda r: r.id) -> list[T]:
  """The items of one shard (see :func:`shard_assignment`), in input order."""
  shard_stem(shard_index, num_shards)
  assignment = shard_assignment((key(item) for item in items), num_shards)
  return [item for item in items if assignment[key(item)] == shard_index]


def chunks(items: Sequence[T], chunk_size: int) -> list[Sequence[T]]:
  """``items`` cut into consecutive chunks of ``chunk_size`` (the last may be shorter)."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  return [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]


def fingerprint(obj: Any) -> str:
  """A short sha256 of ``obj``'s canonical JSON."""
  blob = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")
  return hashlib.sha256(blob).hexdigest()[:16]


def find_shards(out_dir: str | os.PathLike) -> dict[int, set[int]]:
  """num_shards -> shard indices with any output (final, meta or parts) in ``out_dir``."""
  found: dict[int, set[int]] = {}
  out_dir = Path(out_dir)
  if not out_dir.is_dir():
    return found
  for path in out_dir.iterdir():
    match = _SHARD_RE.match(path.name)
    if match:
      found.setdefault(int(match[2]), set()).add(int(match[1]))
  return found


@dataclasses.dataclass(frozen=True)
class Failure:
  """A question the teacher gave no usable output for (counted, never dropped silently)."""
  id: str
  split: str
  level: int
  reason: str

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> Failure:
    return cls(id=str(obj["id"]), split=str(obj["split"]), level=int(obj["level"]),
               reason=str(obj["reason"]))


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A committed chunk: its records, failures and stats (seconds, tokens, ...)."""
  index: int
  records: tuple[records_lib.TraceRecord, ...]
  failures: tuple[Failure, ...]
  stats: Mapping[str, float]


def _read_json(path: Path) -> Any:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise records_lib.RecordError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None


class ShardWriter:
  """Commits chunks of one shard and finalises it (see the module docstring).

  ``run_config`` is everything that shapes the output (input fingerprint,
  levels, backend, prompts, chunk size, ...); a parts directory left by a run
  with a different one is not resumed.
  """

  def __init__(self, out_dir: str | os.PathLike, *, shard_index: int, num_shards: int,
               run_config: Mapping[str, Any]):
    self.out_dir = Path(out_dir)
    self.stem = shard_stem(shard_index, num_shards)
    self.shard_index, self.num_shards = shard_index, num_shards
    self.run_config = json.loads(json.dumps(dict(run_config), sort_keys=True))
    self.final_path = self.out_dir / f"{self.stem}.jsonl"
    self.meta_path = self.out_dir / f"{self.stem}.meta.json"
    self.parts_dir = self.out_dir / f"{self.stem}.parts"

  def is_complete(self) -> bool:
    """Whether the shard was finalised (its traces file exists)."""
    return self.final_path.is_file()

  def check_complete(self) -> None:
    """Raises if a finalised shard was made with different settings."""
    meta = _read_json(self.meta_path) if self.meta_path.is_file() else None
    if meta is None or meta.get("config") != self.run_config:
      diff = _diff(meta.get("config", {}) if meta else {}, self.run_config)
      raise ValueError(f"{self.final_path} exists but was made with different settings "
                       f"({diff}); use another --out or delete it")

  def open(self) -> None:
    """Prepares the parts directory: checks its settings and removes stray temp files."""
    self.parts_dir.mkdir(parents=True, exist_ok=True)
    config_path = self.parts_dir / "run.json"
    if config_path.is_file():
      stored = _read_json(config_path)
      if stored != self.run_config:
        raise ValueError(f"{self.parts_dir} was written by a run with different settings "
                         f"({_diff(stored, self.run_config)}); re-run with the same flags or "
                         "delete the directory")
    else:
      io_lib.atomic_write_text(config_path, json.dumps(self.run_config, indent=1,
                                                            sort_keys=True) + "\n")
    for stray in self.parts_dir.glob(".*.tmp"):  # Left by a kill during a write.
      stray.unlink()

  def _chunk_paths(self, index: int) -> tuple[Path, Path]:
    return (self.parts_dir / f"chunk-{index:05d}.side.json",
            self.parts_dir / f"chunk-{index:05d}.jsonl")

  def done_chunks(self) -> dict[int, Chunk]:
    """The committed chunks, read and validated."""
    done = {}
    if not self.parts_dir.is_dir():
      return done
    for path in sorted(self.parts_dir.iterdir()):
      match = _CHUNK_RE.match(path.name)
      if not match:
        continue
      index = int(match[1])
      side_path, _ = self._chunk_paths(index)
      if not side_path.is_file():
        raise records_lib.RecordError(side_path, None, None, f"missing (its chunk {path} exists)")
      side = _read_json(side_path)
      done[index] = Chunk(index=index, records=tuple(records_lib.read_records(path)),
                          failures=tuple(Failure.from_json(f) for f in side["failures"]),
                          stats=side["stats"])
    return done

  def commit_chunk(self, chunk: Chunk) -> None:
    """Writes a chunk: side file, then records (the commit), each atomically."""
    side_path, records_path = self._chunk_paths(chunk.index)
    side = {"failures": [f.to_json() for f in chunk.failures], "stats": dict(chunk.stats)}
    io_lib.atomic_write_text(side_path, json.dumps(side, sort_keys=True) + "\n")
    io_lib.atomic_write_text(records_path, records_lib.records_to_jsonl(chunk.records))

  def finalize(self, done: Mapping[int, Chunk], *, num_chunks: int,
               extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merges chunks ``0..num_chunks-1`` into the shard's files; returns the meta written."""
    missing = sorted(set(range(num_chunks)) - set(done))
    if missing:
      raise ValueError(f"{self.stem}: cannot finalise, chunks {missing[:10]} are not done")
    ordered = [done[i] for i in range(num_chunks)]
    records = [r for c in ordered for r in c.records]
    failures = [f for c in ordered for f in c.failures]
    totals: dict[str, float] = {}
    for c in ordered:
      for key, value in c.stats.items():
        totals[key] = totals.get(key, 0) + value
    counts: dict[str, int] = {}
    for r in records:
      counts[r.split] = counts.get(r.split, 0) + 1
    meta = {"config": self.run_config, "num_chunks": num_chunks, "records": len(records),
            "records_per_split": counts, "failures": [f.to_json() for f in failures],
            "stats": totals, **(extra_meta or {})}
    io_lib.atomic_write_text(self.meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    io_lib.atomic_write_text(self.final_path, records_lib.records_to_jsonl(records))
    shutil.rmtree(self.parts_dir, ignore_errors=True)
    return meta

  def cleanup_after_complete(self) -> None:
    """Removes a parts directory left by a kill between finalising and its removal."""
    shutil.rmtree(self.parts_dir, ignore_errors=True)


def read_meta(out_dir: str | os.PathLike, shard_index: int, num_shards: int) -> dict[str, Any]:
  """The meta file of a finalised shard."""
  return _read_json(Path(out_dir) / f"{shard_stem(shard_index, num_shards)}.meta.json")


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
  keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  return "; ".join(f"{k}: {a.get(k)!r} then, {b.get(k)!r} now" for k in keys[:5]) or "same"
