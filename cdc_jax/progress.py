"""Progress and metrics: console line with rate and ETA, JSON Lines, TensorBoard."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, TextIO


def format_duration(seconds: float) -> str:
  """'1h02m', '3m05s', '42s'."""
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
  """Counts work done and prints ``label i/n, rate, ETA`` at most every ``interval`` s."""

  def __init__(self, total: int, *, label: str = "", unit: str = "it", start: int = 0,
               interval: float = 5.0, stream: TextIO | None = None):
    self.total, self.label, self.unit, self.interval = total, label, unit, interval
    self.done = start
    self._start_done, self._t0 = start, time.perf_counter()
    self._last_print = 0.0
    self.stream = stream or sys.stderr

  def rate(self) -> float:
    elapsed = time.perf_counter() - self._t0
    return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

  def eta(self) -> float:
    rate = self.rate()
    return (self.total - self.done) / rate if rate > 0 else float("inf")

  def update(self, n: int = 1, *, extra: str = "", force: bool = False) -> None:
    self.done += n
    now = time.perf_counter()
    if force or self.done >= self.total or now - self._last_print >= self.interval:
      self._last_print = now
      eta = self.eta()
      eta_text = format_duration(eta) if eta != float("inf") else "?"
      rate = self.rate()
      rate_text = f"{rate:.2f} {self.unit}/s" if rate >= 0.1 else f"{60 * rate:.2f} {self.unit}/min"
      print(f"{self.label} {self.done}/{self.total} {self.unit} | {rate_text}"
            f" | ETA {eta_text}{' | ' + extra if extra else ''}", file=self.stream, flush=True)


class MetricsWriter:
  """Writes scalar metrics to ``metrics.jsonl`` and TensorBoard event files."""

  def __init__(self, directory: str | os.PathLike, *, tensorboard: bool = True,
               filename: str = "metrics.jsonl"):
    self.directory = Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self._jsonl = (self.directory / filename).open("a", encoding="utf-8")
    self._tb = None
    if tensorboard:
      import tensorflow as tf  # Only for its event-file writer.
      self._tb = tf.summary.create_file_writer(str(self.directory / "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **values}, sort_keys=True) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      import tensorflow as tf
      with self._tb.as_default(step=int(step)):
        for key, value in values.items():
          tf.summary.scalar(key, value)
      self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
  """The rows of a ``metrics.jsonl`` file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
