"""Command-line configuration of the entry points: gin files and bindings.

``--gin_file=F`` (repeatable) parses a gin file, found as given, under the
repository root or under ``--gin_search_path`` s; ``--gin.NAME=VALUE``
(repeatable) binds a macro or parameter, e.g. ``--gin.TRAIN_STEPS=100`` or
``--gin.train.batch_size=8``. Only entry points import this module: library
code stays gin-free.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import gin

REPO_ROOT = Path(__file__).resolve().parents[1]


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_search_path", action="append", default=[],
                      help="directory to find gin files and includes in")


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates ``--gin.NAME=VALUE`` arguments into gin bindings ``NAME = VALUE``."""
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep or not name:
        raise ValueError(f"expected --gin.NAME=VALUE, got {arg!r}")
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
  return bindings, rest


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> None:
  """Parses gin files and bindings (bindings after files, so they override)."""
  for path in [*search_paths, os.getcwd(), str(REPO_ROOT)]:
    gin.add_config_file_search_path(path)
  for f in gin_files:
    if not any((Path(p) / f).exists() for p in ["", *search_paths, os.getcwd(), str(REPO_ROOT)]):
      raise FileNotFoundError(f"gin file {f!r} not found (searched cwd, {REPO_ROOT} and "
                              f"{list(search_paths)})")
  gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False)


def configured(module: str, name: str):
  """The gin-configured version of ``module.name``.

  Entry points run as ``__main__``, a different module object from the one
  the gin files import, so the function is looked up by its import path.
  """
  import importlib

  return gin.get_configurable(getattr(importlib.import_module(module), name))


def run_configured(module: str, name: str, argv: Sequence[str] | None, *, description: str):
  """The whole CLI of a gin-configured entry point: parse flags and gin, call ``module.name``."""
  import logging
  import sys

  bindings, rest = split_gin_bindings(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(description=description)
  add_gin_flags(parser)
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  parse_gin(args.gin_file, bindings, args.gin_search_path)
  return configured(module, name)()


def operative_config() -> str:
  return gin.operative_config_str()
