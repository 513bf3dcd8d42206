"""Evaluate a student on every scored task of a task or mixture.

    python -m cdc_jax.evaluate --gin_file=gin/runs/eval.gin \
        --gin.CHECKPOINT="'/tmp/cdc_run'" --gin.MIXTURE_OR_TASK_NAME="'cdc.trivia.L6.cot_label'"

The command line of :func:`cdc_jax.student.evaluation.evaluate` (gin files
name it ``evaluate.evaluate`` after ``from cdc_jax import evaluate``).
"""

from __future__ import annotations

import os
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from cdc_jax.student.evaluation import evaluate  # pylint: disable=g-import-not-at-top

__all__ = ["evaluate", "main"]


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: gin files and ``--gin.NAME=VALUE`` bindings configure :func:`evaluate`."""
  from cdc_jax import config_cli

  config_cli.run_configured("cdc_jax.evaluate", "evaluate", argv,
                            description=__doc__.split("\n")[0])


if __name__ == "__main__":
  main()
