"""Importers: published CoT datasets -> cdc_jax community directories.

One module per published format (``leveled_cot`` takes any dataset in its
layout) and one for data in no known layout (``fields``: JSON, JSON Lines or
CSV with the fields named by the caller); each reduces its files to gold
questions and teacher rationales, which :func:`assembly.assemble` joins by
normalised question text into :class:`~cdc_jax.data.records.TraceRecord` s
with an :class:`ImportReport` of everything counted, skipped or merged.

>>> sorted(FORMATS)
['dss', 'fields', 'gsm8k', 'leveled_cot', 'strategyqa']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cdc_jax.data.importers.assembly import (KEEP_CHOICES, GoldQuestion, ImportedCommunity,
                                             ImportReport, LevelTrace, assemble, question_key,
                                             stable_id, strip_answer_sentence, write_imported)
from cdc_jax.data.importers.dss import evaluate_expression, import_dss
from cdc_jax.data.importers.fields import import_fields, parse_rationale_fields
from cdc_jax.data.importers.gsm8k import import_gsm8k
from cdc_jax.data.importers.leveled_cot import import_leveled_cot, parse_choice_instruction
from cdc_jax.data.importers.sources import (SourceError, SourceItem, read_json_array,
                                            read_json_lines)
from cdc_jax.data.importers.strategyqa import import_strategyqa

FORMATS = ("leveled_cot", "fields", "dss", "gsm8k", "strategyqa")

__all__ = [
    "FORMATS", "KEEP_CHOICES", "GoldQuestion", "ImportReport", "ImportedCommunity", "LevelTrace",
    "SourceError", "SourceItem", "assemble", "evaluate_expression", "import_dss", "import_fields",
    "import_gsm8k", "import_leveled_cot", "import_source", "import_strategyqa",
    "parse_choice_instruction", "parse_rationale_fields", "question_key", "read_json_array",
    "read_json_lines", "stable_id", "strip_answer_sentence", "write_imported",
]


def import_source(fmt: str, source_dir: str | Path, /, *, community: str,
                  dataset: str | None = None,
                  teacher: str | None = None, keep: str = "all",
                  levels: Sequence[int] | None = None, **options: Any) -> ImportedCommunity:
  """Imports one source in format ``fmt`` (one of :data:`FORMATS`).

  ``teacher`` and several ``levels`` exist for 'leveled_cot' and 'fields';
  the other formats have one rationale per question, stored at the single
  level given in ``levels`` (default: the full-CoT level 6). ``dataset``
  names the dataset inside a multi-dataset folder ('leveled_cot': required,
  any name; 'dss': default the folder's name). ``options`` go to
  :func:`import_leveled_cot` (files, answer type, provenance) or
  :func:`import_fields` (files and field names, provenance).
  """
  if fmt not in FORMATS:
    raise ValueError(f"unknown format {fmt!r}: expected one of {FORMATS}")
  if fmt == "leveled_cot":
    if dataset is None:
      raise ValueError("format 'leveled_cot' needs a dataset: the file-name prefix (a preset: "
                       "strategyqa, csqa, gsm8k, svamp; or any other name)")
    return import_leveled_cot(source_dir, dataset=dataset, community=community, teacher=teacher,
                              keep=keep, levels=levels, **options)
  if fmt == "fields":
    if levels is not None:
      raise ValueError("format 'fields' takes its levels from the rationale fields "
                       "(LEVEL:FIELD), not from levels")
    return import_fields(source_dir, community=community, keep=keep,
                         **({"teacher": teacher} if teacher else {}), **options)
  if options:
    raise ValueError(f"format {fmt!r} has a fixed layout: {sorted(options)} are for "
                     "leveled_cot and fields")
  if teacher is not None:
    raise ValueError(f"format {fmt!r} has one fixed teacher; --teacher is for leveled_cot")
  if levels is not None and len(levels) != 1:
    raise ValueError(f"format {fmt!r} has one rationale per question: give one level to store "
                     f"it at, not {list(levels)}")
  level_kwargs = {"level": levels[0]} if levels else {}
  if fmt == "dss":
    return import_dss(source_dir, community=community, dataset=dataset, keep=keep, **level_kwargs)
  if dataset is not None and dataset != fmt:
    raise ValueError(f"format {fmt!r} holds only dataset {fmt!r}, not {dataset!r}")
  if fmt == "gsm8k":
    return import_gsm8k(source_dir, community=community, keep=keep, **level_kwargs)
  return import_strategyqa(source_dir, community=community, keep=keep, **level_kwargs)
