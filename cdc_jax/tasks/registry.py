"""Registering communities as SeqIO tasks and coalitions as SeqIO mixtures.

``register_community(manifest)`` registers ``cdc.<community>.L<level>.<format>``
for every level and format (for ``step_by_step``: the ``:predict`` and
``:explain`` tasks and a mixture of the two, whose rates weight the losses).
``register_coalition`` registers ``cdc.<coalition>.L<level>.<format>``, a
mixture of its members' tasks. Registration is idempotent per process; the
same name with different content is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
from pathlib import Path
from typing import Mapping, Sequence

import seqio

from cdc_jax import names
from cdc_jax.data import records as records_lib
from cdc_jax.tasks import formats, metrics, preprocessors


@dataclasses.dataclass(frozen=True)
class TaskOptions:
  """How a community's tasks are built.

  Attributes:
    levels: rationale levels to register.
    formats: target formats to register.
    explain_rate: step_by_step: rate of the explain task relative to predict
      (1.0 weighs both losses equally).
    permute_seed: permuted_cot: seed of the word shuffles.
    key_tokens_k: key_tokens: rationale words kept.
    key_token_selector: key_tokens: name of a registered selector.
    prompt_template: where the inputs go in the prompt: "{inputs}" (as they
      are), a template with one "{inputs}", or "chat": the vocabulary's chat
      template around a user turn (decoder-only students).
    inputs_eos: append EOS to the inputs (T5); a decoder-only student's
      completion follows its prompt directly.
  """
  levels: tuple[int, ...] = names.LEVELS
  formats: tuple[str, ...] = names.FORMATS
  explain_rate: float = 1.0
  permute_seed: int = 0
  key_tokens_k: int = 8
  key_token_selector: str = "salience"
  prompt_template: str = "{inputs}"
  inputs_eos: bool = True

  def __post_init__(self):
    if self.prompt_template != "chat" and self.prompt_template.count("{inputs}") != 1:
      raise ValueError(f"TaskOptions.prompt_template must be 'chat' or contain '{{inputs}}' "
                       f"exactly once, got {self.prompt_template!r}")
    for level in self.levels:
      names.validate_level(level)
    for fmt in self.formats:
      names.validate_format(fmt)
    if self.explain_rate <= 0 or self.key_tokens_k < 1:
      raise ValueError(f"explain_rate must be > 0 and key_tokens_k >= 1: {self}")


@dataclasses.dataclass(frozen=True)
class RegisteredCommunity:
  """What the registry knows of a registered community."""
  name: str
  manifest_path: Path
  answer_type: str
  train_examples: Mapping[int, int]  # Level -> training records with that rationale.
  total_train: int
  options: TaskOptions


_FINGERPRINTS: dict[str, str] = {}
_COMMUNITIES: dict[str, RegisteredCommunity] = {}
_COALITIONS: dict[str, tuple[str, ...]] = {}


def _claim(name: str, fingerprint: str) -> bool:
  """True if ``name`` still needs registering; raises on a clash."""
  previous = _FINGERPRINTS.get(name)
  if previous == fingerprint:
    return False
  if previous is not None or name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
    raise ValueError(f"{name!r} is already registered with different content; names must be "
                     "unique per process (rename the community or coalition)")
  _FINGERPRINTS[name] = fingerprint
  return True


def output_features(vocabulary: seqio.Vocabulary, *,
                    inputs_eos: bool = True) -> dict[str, seqio.Feature]:
  return {"inputs": seqio.Feature(vocabulary, add_eos=inputs_eos),
          "targets": seqio.Feature(vocabulary, add_eos=True)}


def prompt_template(options: TaskOptions, vocabulary: seqio.Vocabulary) -> str:
  """The template (one ``{inputs}``) the tasks put their inputs in; "chat": the vocabulary's."""
  if options.prompt_template != "chat":
    return options.prompt_template
  template = getattr(vocabulary, "chat_prompt_template", None)
  if template is None:
    raise ValueError(f"prompt_template='chat' needs a vocabulary with a chat template; "
                     f"{type(vocabulary).__name__} has none")
  return template


def _vocab_id(vocabulary: seqio.Vocabulary) -> str:
  source = getattr(vocabulary, "sentencepiece_model_file", None) or getattr(vocabulary, "source", "")
  return f"{type(vocabulary).__name__}:{source}:" \
         f"{vocabulary.vocab_size}"


def _community_hash(community: records_lib.Community) -> str:
  digest = hashlib.sha256(json.dumps(community.manifest.to_json(), sort_keys=True).encode())
  for split in sorted(community.records):
    digest.update(records_lib.records_to_jsonl(community.records[split]).encode())
  return digest.hexdigest()


def register_community(manifest_path: str | os.PathLike, *, vocabulary: seqio.Vocabulary,
                       options: TaskOptions = TaskOptions(),
                       community: records_lib.Community | None = None) -> list[str]:
  """Registers every task of the community at ``manifest_path``; returns their names.

  ``community`` may pass the already loaded records to avoid reading twice.
  """
  community = community or records_lib.load_community(manifest_path)
  base = f"{_community_hash(community)}:{_vocab_id(vocabulary)}:{options}"
  features = output_features(vocabulary, inputs_eos=options.inputs_eos)
  template = prompt_template(options, vocabulary)
  registered = []
  sources = {}
  for level in options.levels:
    for fmt in options.formats:
      parts = names.STEP_BY_STEP_PARTS if fmt == "step_by_step" else (None,)
      for part in parts:
        name = names.task_name(community.name, level, fmt, part)
        registered.append(name)
        if not _claim(name, base):
          continue
        needs = formats.needs_rationale(fmt, part)
        if (level, needs) not in sources:
          sources[level, needs] = preprocessors.records_source(
              community, level=level, require_rationale=needs)
        scored = part != "explain"
        seqio.TaskRegistry.add(
            name, source=sources[level, needs],
            preprocessors=preprocessors.preprocessor_chain(
                level=level, fmt=fmt, part=part, seed=options.permute_seed,
                k=options.key_tokens_k, selector=options.key_token_selector,
                prompt_template=template),
            output_features=features,
            postprocess_fn=metrics.postprocess_answer if scored else None,
            metric_fns=[metrics.answer_accuracy] if scored else [])
      if fmt == "step_by_step":
        name = names.task_name(community.name, level, fmt)
        registered.append(name)
        if _claim(name, base):
          seqio.MixtureRegistry.add(name, [(names.task_name(community.name, level, fmt, "predict"), 1.0),
                                           (names.task_name(community.name, level, fmt, "explain"),
                                            options.explain_rate)])
  train = community.records.get("train", ())
  _COMMUNITIES[community.name] = RegisteredCommunity(
      name=community.name, manifest_path=Path(manifest_path), answer_type=community.manifest.answer_type,
      train_examples={lv: sum(lv in r.rationales for r in train) for lv in names.LEVELS},
      total_train=len(train), options=options)
  return registered


def registered_community(name: str) -> RegisteredCommunity:
  try:
    return _COMMUNITIES[name]
  except KeyError:
    raise ValueError(f"community {name!r} is not registered; registered: "
                     f"{sorted(_COMMUNITIES)}") from None


_PROPORTION_TOLERANCE = 1e-6


def coalition_rates(members: Sequence[str], rates: str | Mapping[str, float], *,
                    level: int, fmt: str, normalize: bool = False) -> dict[str, float]:
  """Per-member mixing rates that sum to 1.

  ``rates``: 'equal'; 'examples' (by training examples usable at ``level``);
  or explicit proportions {member: rate} covering exactly the members: finite
  positive numbers summing to 1, or to anything positive with ``normalize``
  (a sum of 3 is more often a mistake than a wish, so rescaling is asked for).
  """
  names.validate_level(level)
  names.validate_format(fmt)
  if isinstance(rates, str):
    if rates == "equal":
      return {m: 1 / len(members) for m in members}
    if rates != "examples":
      raise ValueError(f"unknown rates {rates!r}: 'equal', 'examples' or a mapping")
    usable = (lambda c: c.total_train) if fmt == "label_only" else (
        lambda c: c.train_examples[level])
    raw = {m: float(usable(registered_community(m))) for m in members}
    empty = [m for m, n in raw.items() if n <= 0]
    if empty:
      what = "training records" + (
          "" if fmt == "label_only" else f" with a level-{level} rationale")
      raise ValueError(f"rates='examples': community {empty[0]!r} has no {what} "
                       f"({registered_community(empty[0]).manifest_path})")
  else:
    if not isinstance(rates, Mapping):
      raise ValueError(f"rates must be 'equal', 'examples' or a mapping, got {rates!r}")
    if set(rates) != set(members):
      raise ValueError(f"rates name {sorted(rates)} but the members are {sorted(members)}")
    for m in members:
      p = rates[m]
      if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p <= 0:
        raise ValueError(f"proportion of {m!r} must be a finite positive number, got {p!r}")
    raw = {m: float(rates[m]) for m in members}
    total = sum(raw.values())
    if abs(total - 1) > _PROPORTION_TOLERANCE and not normalize:
      raise ValueError(f"proportions {raw} sum to {total:g}, not 1; pass normalize=True to "
                       "rescale them")
  total = sum(raw.values())
  return {m: raw[m] / total for m in members}


def register_coalition(name: str, members: Sequence[str], *, level: int, fmt: str,
                       rates: str | Mapping[str, float] = "equal",
                       normalize: bool = False) -> str:
  """Registers the mixture ``cdc.<name>.L<level>.<fmt>`` of the members' tasks.

  ``normalize`` rescales explicit proportions that do not sum to 1. A name
  stands for one set of members: registering it again with others raises.
  """
  names.validate_name(name, what="coalition")
  names.validate_level(level)
  names.validate_format(fmt)
  if name in _COMMUNITIES:
    raise ValueError(f"coalition name {name!r} is a community's name")
  members = tuple(members)
  if not members or len(set(members)) != len(members):
    raise ValueError(f"coalition {name!r} needs distinct members, got {members}")
  if name in _COALITIONS and set(_COALITIONS[name]) != set(members):
    raise ValueError(f"coalition {name!r} is already registered with members "
                     f"{list(_COALITIONS[name])}; cannot register it again with {list(members)} "
                     "(use another name)")
  for m in members:
    registered_community(m)
  shares = coalition_rates(members, rates, level=level, fmt=fmt, normalize=normalize)
  components = []
  for m in members:
    if fmt == "step_by_step":
      explain = registered_community(m).options.explain_rate
      components.append((names.task_name(m, level, fmt, "predict"), shares[m] / (1 + explain)))
      components.append((names.task_name(m, level, fmt, "explain"),
                         shares[m] * explain / (1 + explain)))
    else:
      components.append((names.task_name(m, level, fmt), shares[m]))
  mixture = names.mixture_name(name, level, fmt)
  if _claim(mixture, json.dumps(sorted(components))):  # Member order does not matter.
    seqio.MixtureRegistry.add(mixture, components)
  _COALITIONS[name] = members
  return mixture
