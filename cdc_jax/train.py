"""Train a student on a SeqIO task or mixture.

    python -m cdc_jax.train --gin_file=gin/experiments/embedded_tiny.gin \
        --gin.MODEL_DIR="'/tmp/cdc_run'" --gin.TRAIN_STEPS=200

Restarting the same command resumes from the latest checkpoint in
``model_dir``. The command line of :func:`cdc_jax.student.training.train`
(gin files name it ``train.train`` after ``from cdc_jax import train``), with
the flags of a multi-host run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # pylint: disable=g-import-not-at-top

from cdc_jax import distributed  # pylint: disable=g-import-not-at-top
from cdc_jax.student.training import train  # pylint: disable=g-import-not-at-top

__all__ = ["main", "train"]


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: multi-host flags, gin files and ``--gin.NAME=VALUE`` bindings."""
  from cdc_jax import config_cli

  argv = list(sys.argv[1:] if argv is None else argv)
  bindings, rest = config_cli.split_gin_bindings(argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  config_cli.add_gin_flags(parser)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--multihost_auto", action="store_true",
                      help="let JAX detect the cluster (TPU pods, Slurm)")
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  distributed.initialize(coordinator_address=args.coordinator_address,
                         num_processes=args.num_processes, process_id=args.process_id,
                         auto=args.multihost_auto)
  config_cli.parse_gin(args.gin_file, bindings, args.gin_search_path)
  config_cli.require_macros("cdc_jax.train", "train")
  metrics = config_cli.configured("cdc_jax.train", "train")()
  if jax.process_index() == 0:
    print(json.dumps({"final_metrics": metrics}, sort_keys=True))


if __name__ == "__main__":
  main()
