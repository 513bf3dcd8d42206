"""Multi-host start-up: ``jax.distributed`` from flags or the environment."""

from __future__ import annotations

import logging
import os

import jax


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
  """Joins a multi-process JAX system; returns True if it did.

  Arguments fall back to ``$CDC_COORDINATOR_ADDRESS``, ``$CDC_NUM_PROCESSES``
  and ``$CDC_PROCESS_ID``. With none set, a single process runs unless
  ``auto`` (Cloud TPU pods, Slurm), where JAX detects the cluster itself.
  """
  coordinator_address = coordinator_address or os.environ.get("CDC_COORDINATOR_ADDRESS")
  if num_processes is None and "CDC_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["CDC_NUM_PROCESSES"])
  if process_id is None and "CDC_PROCESS_ID" in os.environ:
    process_id = int(os.environ["CDC_PROCESS_ID"])
  if coordinator_address is None and not auto:
    return False
  if coordinator_address is not None and (num_processes is None or process_id is None):
    raise ValueError("a coordinator address needs num_processes and process_id "
                     "(flags or $CDC_NUM_PROCESSES / $CDC_PROCESS_ID)")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


class ProcessGroup:
  """The processes of one multi-host JAX system acting as one worker.

  Process 0 (the lead) owns side effects such as writing files; it shares
  decisions with the others so every process runs the same collective
  programs in the same order.
  """

  def __init__(self) -> None:
    self.index = jax.process_index()
    self.count = jax.process_count()

  @property
  def is_lead(self) -> bool:
    """True on process 0."""
    return self.index == 0

  def share(self, values: list[int], *, length: int) -> list[int]:
    """The lead's ``values`` (``length`` ints; other processes pass anything) on every process."""
    import numpy as np
    from jax.experimental import multihost_utils
    padded = np.zeros(length, np.int64)
    if self.is_lead:
      padded[:] = values
    return [int(v) for v in multihost_utils.broadcast_one_to_all(padded)]
