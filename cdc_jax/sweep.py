"""Run a coalition sweep: ``python -m cdc_jax.sweep``.

    python -m cdc_jax.sweep --gin_file=gin/sweeps/embedded_demo.gin \
        --gin.SWEEP_DIR="'/tmp/sweep'" [--workers=2] [--dry_run]

Calls the gin-configured :func:`cdc_jax.coalitions.sweep.run_sweep` (the grid,
resuming, dry runs and failures are described there).
"""

from __future__ import annotations

from typing import Sequence

from cdc_jax import config_cli


def main(argv: Sequence[str] | None = None) -> None:
  """Command-line entry point."""
  _, overrides = config_cli.parse_sweep_flags(argv, description=__doc__.split("\n")[0])
  config_cli.configured("cdc_jax.coalitions.sweep", "run_sweep")(**overrides)


if __name__ == "__main__":
  main()
