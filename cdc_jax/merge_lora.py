"""Fold a LoRA student's adapters into its base weights: a full checkpoint.

    python -m cdc_jax.merge_lora --gin_file=gin/models/smollm2_135m_lora.gin \
        --gin_file=gin/runs/merge_lora.gin --gin.CHECKPOINT="'runs/smollm2_stqa'" \
        --gin.OUTPUT_DIR="'runs/smollm2_stqa_merged'"

The command line of :func:`cdc_jax.student.lora_merge.merge_lora` (gin files
name it ``merge_lora.merge_lora`` after ``from cdc_jax import merge_lora``).
"""

from __future__ import annotations

import os
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from cdc_jax.student.lora_merge import merge_lora  # pylint: disable=g-import-not-at-top

__all__ = ["main", "merge_lora"]


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: gin files and ``--gin.NAME=VALUE`` bindings configure :func:`merge_lora`."""
  from cdc_jax import config_cli

  config_cli.run_configured("cdc_jax.merge_lora", "merge_lora", argv,
                            description=__doc__.split("\n")[0])


if __name__ == "__main__":
  main()
