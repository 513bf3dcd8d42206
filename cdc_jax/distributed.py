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
