r"""Imports a CoT dataset as a community directory.

  python -m cdc_jax.data.import_traces --format=leveled_cot \
      --source=../shared/data/eit_cot --dataset=strategyqa --teacher=llama \
      --out=/tmp/communities/stqa_llama --community=stqa_llama [--keep=correct] [--levels=1,6]
  python -m cdc_jax.data.import_traces --format=leveled_cot --source=DIR --dataset=mydata \
      --license=CC-BY-4.0 --provenance_source=https://... --out=... --community=mydata
  python -m cdc_jax.data.import_traces --format=fields --source=DIR --train_file=train.csv \
      --test_file=test.jsonl --question_field=prompt --answer_field=gold \
      --rationale_fields=6:why,1:why_short --license=CC0-1.0 --out=... --community=...

Formats: leveled_cot (the EIT-NLP layout, levels 1..6: the presets strategyqa,
csqa, gsm8k, svamp, or any other dataset whose files are named
``<name>_<teacher>_level<N>[_ranked].json`` and ``<name>_onlyans.json``, or
given by flags), fields (JSON, JSON Lines or CSV in any layout, fields named by
flags), dss (distilling-step-by-step cqa|svamp, PaLM), gsm8k and strategyqa
(official releases, human rationales). Prints the import report: records per
split, teacher accuracy per level, questions absent from a level, skipped
questions and merged duplicates.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cdc_jax import names
from cdc_jax.data import importers


def _levels(text: str) -> tuple[int, ...]:
  try:
    return tuple(names.validate_level(int(part)) for part in text.split(",") if part.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"--levels={text!r}: {e}") from None


def _pairs(text: str) -> dict[str, str]:
  """``'1:a.json,3:b.json'`` -> ``{'1': 'a.json', '3': 'b.json'}``; an argparse type."""
  out = {}
  for part in (p.strip() for p in text.split(",") if p.strip()):
    key, sep, value = part.partition(":")
    if not sep or not key.strip() or not value.strip():
      raise argparse.ArgumentTypeError(f"{text!r}: expected KEY:VALUE pairs, got {part!r}")
    out[key.strip()] = value.strip()
  return out


def _rationale_fields(text: str) -> dict[int, str]:
  try:
    return importers.parse_rationale_fields(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


# Flags that only one open format reads: (flag, keyword of the importer).
_LEVELED_FLAGS = (("level_files", "level_paths"), ("gold_file", "gold_file"),
                  ("choice_style", "choice_style"), ("teacher_name", "teacher_name"))
_FIELDS_FLAGS = (("question_field", "question_field"), ("answer_field", "answer_field"),
                 ("choices_field", "choices_field"), ("rationale_fields", "rationale_fields"),
                 ("id_field", "id_field"), ("split_field", "split_field"),
                 ("split_values", "split_values"), ("choices_separator", "choices_separator"),
                 ("input_format", "input_format"))
_SHARED_FLAGS = (("answer_type", "answer_type"), ("provenance_source", "source"),
                 ("license", "license"), ("description", "description"))


def importer_options(args: argparse.Namespace) -> dict:
  """The keyword arguments of the open importers that the flags set; refuses misplaced flags."""
  own = {"leveled_cot": _LEVELED_FLAGS + _SHARED_FLAGS,
         "fields": _FIELDS_FLAGS + _SHARED_FLAGS}.get(args.format, ())
  options = {}
  for flag, keyword in _LEVELED_FLAGS + _FIELDS_FLAGS + _SHARED_FLAGS:
    value = getattr(args, flag)
    if value is None:
      continue
    if (flag, keyword) not in own:
      raise ValueError(f"--{flag} is not a flag of --format={args.format}")
    if flag == "level_files":
      bad = [k for k in value if not k.isdigit()]
      if bad:
        raise ValueError(f"--level_files: {bad[0]!r} is not a level number (LEVEL:FILE,...)")
      value = {int(k): v for k, v in value.items()}
    options[keyword] = value
  split_files = {split: getattr(args, f"{split}_file") for split in ("train", "validation", "test")
                 if getattr(args, f"{split}_file")}
  if args.format == "leveled_cot":
    if args.validation_file or args.train_file or args.file:
      raise ValueError("leveled_cot reads its train split from the gold and level files; "
                       "--train_file, --validation_file and --file are for --format=fields")
    if args.test_file:
      options["test_file"] = args.test_file
  elif args.format == "fields":
    files = dict(split_files)
    for i, file in enumerate(args.file or ()):
      if not args.split_field:
        raise ValueError("--file needs --split_field (the field holding each row's split); "
                         "or name files by split: --train_file, --test_file")
      files[f"file{i}"] = file
    options["files"] = files
    for required in ("question_field", "answer_field"):
      if required not in options:
        raise ValueError(f"--format=fields needs --{required}")
  elif split_files or args.file:
    raise ValueError(f"--format={args.format} has a fixed layout: no --*_file flags")
  return options


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line."""
  parser = argparse.ArgumentParser(
      prog="python -m cdc_jax.data.import_traces",
      description="Import a CoT dataset as a cdc_jax community directory.")
  parser.add_argument("--format", required=True, choices=importers.FORMATS)
  parser.add_argument("--source", required=True, help="folder of the published files")
  parser.add_argument("--out", required=True, help="community directory to write")
  parser.add_argument("--community", required=True, help="community name [a-z][a-z0-9_]*")
  parser.add_argument("--dataset", default=None,
                      help="leveled_cot: the file-name prefix, a preset (strategyqa|csqa|gsm8k|"
                           "svamp) or any other name; dss: cqa|svamp (default: the folder's name)")
  parser.add_argument("--teacher", default=None,
                      help="leveled_cot: the teacher in the file names (llama|gemini|...; default "
                           "the only one present); fields: who wrote the rationales")
  parser.add_argument("--keep", default="all", choices=importers.KEEP_CHOICES,
                      help="correct: drop each rationale whose teacher answer is wrong")
  parser.add_argument("--levels", type=_levels, default=None,
                      help="leveled_cot: levels to import (default all); other formats: the "
                           "one level to store the rationale at (default 6)")
  files = parser.add_argument_group("files (relative to --source)")
  files.add_argument("--level_files", type=_pairs, default=None,
                     help="leveled_cot: LEVEL:FILE,... instead of detecting them")
  files.add_argument("--gold_file", default=None,
                     help="leveled_cot: the gold-answers file (default <name>_onlyans.json)")
  files.add_argument("--test_file", default=None,
                     help="leveled_cot: the test file (default <name>_test.json if present); "
                          "fields: the test split's file")
  files.add_argument("--train_file", default=None, help="fields: the train split's file")
  files.add_argument("--validation_file", default=None, help="fields: the validation file")
  files.add_argument("--file", action="append", default=None,
                     help="fields: a file whose rows name their split (--split_field); repeatable")
  fields = parser.add_argument_group("fields (format fields; dotted paths into JSON objects)")
  fields.add_argument("--question_field", default=None)
  fields.add_argument("--answer_field", default=None)
  fields.add_argument("--choices_field", default=None,
                      help="a list, or text holding a JSON list or options joined by "
                           "--choices_separator")
  fields.add_argument("--rationale_fields", type=_rationale_fields, default=None,
                      help="LEVEL:FIELD,... (a bare FIELD is level 6)")
  fields.add_argument("--id_field", default=None, help="default: a hash of split and question")
  fields.add_argument("--split_field", default=None)
  fields.add_argument("--split_values", type=_pairs, default=None,
                      help="renames of split values, e.g. dev:validation,eval:test")
  fields.add_argument("--choices_separator", default=None, help="default '|'")
  fields.add_argument("--input_format", default=None, choices=importers.fields.INPUT_FORMATS,
                      help="default: by file extension")
  what = parser.add_argument_group("what the data is (leveled_cot presets and fields)")
  what.add_argument("--answer_type", default=None, choices=("boolean", "choice", "number", "text"),
                    help="default: detected from the gold answers")
  what.add_argument("--choice_style", default=None, choices=importers.leveled_cot.CHOICE_STYLES,
                    help="leveled_cot: how instructions list choices (default auto)")
  what.add_argument("--teacher_name", default=None,
                    help="leveled_cot: the teacher's full name (default: from --teacher)")
  what.add_argument("--provenance_source", default=None,
                    help="where the data comes from (a URL or citation; default: the upstream "
                         "of a preset, else the --source folder)")
  what.add_argument("--license", default=None,
                    help="license of the traces (required except for presets)")
  what.add_argument("--description", default=None, help="the community's description")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs an import; returns the exit status (1 with a message on bad input)."""
  args = parse_args(argv)
  try:
    names.validate_name(args.community)
    imported = importers.import_source(
        args.format, args.source, community=args.community, dataset=args.dataset,
        teacher=args.teacher, keep=args.keep, levels=args.levels, **importer_options(args))
    manifest = importers.write_imported(args.out, imported)
  except (ValueError, OSError) as e:  # SourceError is a ValueError.
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(imported.report)
  print(f"wrote {manifest}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
