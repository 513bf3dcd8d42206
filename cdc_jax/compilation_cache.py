"""JAX's persistent compilation cache, shared by the programs of this project.

Later processes with the same shapes (the runs of a sweep, other teacher
shards on a shared disk, a resumed run, a restarted server) load compiled XLA
programs instead of compiling again, which on CPU takes seconds to minutes.
"""

from __future__ import annotations

import os
from pathlib import Path

from cdc_jax import io as io_lib


def default_directory() -> Path:
  """``$CDC_XLA_CACHE`` or ``<cdc cache dir>/xla``."""
  return Path(os.environ.get("CDC_XLA_CACHE", io_lib.default_cache_dir() / "xla"))


def enable(directory: str | os.PathLike | None = None, *,
           min_compile_time_secs: float = 0.5) -> Path:
  """Turns the cache on in ``directory`` (default ``default_directory()``); returns it.

  Programs that compile faster than ``min_compile_time_secs`` are not stored
  (a sweep's many tiny ones would only fill the disk); a teacher stores all.
  """
  import jax

  path = Path(directory) if directory is not None else default_directory()
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
  return path
