"""Generate predictions for a file of inputs with a trained student.

    python -m cdc_jax.infer \
        --gin_file=gin/models/t5_1_1_tiny.gin --gin_file=gin/runs/infer.gin \
        --gin.CHECKPOINT="'/tmp/cdc_run'" --gin.INPUT_FILE="'questions.txt'" \
        --gin.OUTPUT_FILE="'/tmp/cdc_run/predictions.jsonl'"

The command line of :func:`cdc_jax.student.inference.infer` (gin files name it
``infer.infer`` after ``from cdc_jax import infer``); input formats are
described there. Prints the :class:`~cdc_jax.student.inference.InferReport`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from cdc_jax.student.inference import infer  # pylint: disable=g-import-not-at-top

__all__ = ["infer", "main"]


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: gin files and ``--gin.NAME=VALUE`` bindings configure :func:`infer`."""
  from cdc_jax import config_cli

  report = config_cli.run_configured("cdc_jax.infer", "infer", argv,
                                     description=__doc__.split("\n")[0])
  print(json.dumps(dataclasses.asdict(report), sort_keys=True))


if __name__ == "__main__":
  main()
