"""Dynamic batching for the teacher server: requests that wait together are generated together.

Request handlers :meth:`Batcher.submit` validated jobs (token ids and their
own options) to a bounded queue; one thread takes everything waiting (up to
``max_batch``) and runs it through ``generate_ids``, one call per sampling
setting, each row with its own ``max_new_tokens``. A full queue refuses at
once (:class:`QueueFull`) so the server can answer 429 instead of letting
connections pile up.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
from typing import Callable, Sequence

log = logging.getLogger(__name__)

# generate_ids(prompts, *, max_new_tokens, temperature, seed) -> [(ids, count, stopped)].
GenerateIds = Callable[..., list[tuple[list[int], int, bool]]]


@dataclasses.dataclass(frozen=True)
class Job:
  """One validated request: prompt token ids and its sampling options."""
  prompt_ids: tuple[int, ...]
  max_new_tokens: int
  temperature: float
  seed: int


class QueueFull(RuntimeError):
  """The queue holds ``max_queue`` jobs already."""


_Item = tuple[Job, concurrent.futures.Future]


class Batcher:
  """Generates queued jobs on one thread, batching those that wait together."""

  def __init__(self, generate_ids: GenerateIds, *, max_batch: int = 16, max_queue: int = 64):
    if max_batch < 1 or max_queue < 1:
      raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch}, {max_queue}")
    self._generate_ids, self.max_batch, self.max_queue = generate_ids, max_batch, max_queue
    self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
    self.batches_run = 0
    self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
    self._thread.start()

  @property
  def waiting(self) -> int:
    """Jobs queued and not yet taken into a batch."""
    return self._queue.qsize()

  def submit(self, job: Job) -> concurrent.futures.Future:
    """Queues ``job``; its future gets ``(ids, count, stopped)``. Raises QueueFull."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    try:
      self._queue.put_nowait((job, future))
    except queue.Full:
      raise QueueFull(f"{self.max_queue} requests are already waiting") from None
    return future

  def close(self, timeout: float | None = None) -> None:
    """Stops the thread after the batch it is running (queued jobs are cancelled)."""
    if not self._thread.is_alive():
      return
    while True:  # Make room for the sentinel; what is still queued will not run.
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        break
      if item is not None:
        item[1].cancel()
    self._queue.put(None)
    self._thread.join(timeout)

  def _take(self) -> list[_Item] | None:
    first = self._queue.get()
    if first is None:
      return None
    batch = [first]
    while len(batch) < self.max_batch:
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        break
      if item is None:
        self._queue.put(None)  # Seen again by the next _take.
        break
      batch.append(item)
    # A job whose client went away is cancelled; running it would be wasted work.
    return [(job, f) for job, f in batch if f.set_running_or_notify_cancel()]

  def _loop(self) -> None:
    while (batch := self._take()) is not None:
      groups: dict[tuple[float, int], list[_Item]] = {}
      for item in batch:
        groups.setdefault((item[0].temperature, item[0].seed), []).append(item)
      for items in groups.values():
        self._run(items)

  def _run(self, items: Sequence[_Item]) -> None:
    jobs = [job for job, _ in items]
    try:
      results = self._generate_ids([list(j.prompt_ids) for j in jobs],
                                   max_new_tokens=[j.max_new_tokens for j in jobs],
                                   temperature=jobs[0].temperature, seed=jobs[0].seed)
      self.batches_run += 1
    except Exception as e:  # pylint: disable=broad-except  # Handed to the waiting handlers.
      if len(items) > 1:  # Jobs are validated, but if one still fails it must fail alone.
        for item in items:
          self._run([item])
        return
      log.exception("generation failed for a %d-token prompt", len(jobs[0].prompt_ids))
      items[0][1].set_exception(e)
      return
    for (_, future), result in zip(items, results):
      future.set_result(result)

