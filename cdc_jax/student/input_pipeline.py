"""Input pipeline: SeqIO task/mixture -> feature-converted, batched numpy.

Deterministic given ``seed``: the same seed yields the same batches, and a
restarted run skips the batches it already consumed, so training resumes at
the exact data position. Each process reads its own shard of the data
(``shard_id = process_index``) and produces its part of the global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to train on and how batches are built.

  Attributes:
    mixture_or_task_name: a registered SeqIO task or mixture.
    task_feature_lengths: e.g. {"inputs": 128, "targets": 64}.
    batch_size: global batch size (examples, or packed rows when ``pack``).
    split: split to read.
    pack: pack several examples into one row (seqio EncDecFeatureConverter).
    seed: shuffling / mixture sampling seed.
    shuffle: shuffle examples (training); off for evaluation.
    feature_converter_cls: the model's (``model.FEATURE_CONVERTER_CLS``):
      encoder-decoder features for T5, prompt+completion for a decoder-only student.
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  batch_size: int
  split: str = "train"
  pack: bool = True
  seed: int = 0
  shuffle: bool = True
  feature_converter_cls: type[seqio.FeatureConverter] = seqio.EncDecFeatureConverter

  def __post_init__(self):
    if self.batch_size % jax.process_count():
      raise ValueError(f"batch_size {self.batch_size} is not divisible by the "
                       f"{jax.process_count()} processes")


def feature_converter(config: DataConfig) -> seqio.FeatureConverter:
  return config.feature_converter_cls(pack=config.pack)


def model_feature_shapes(config: DataConfig, *, batch_size: int | None = None) -> dict[str, tuple]:
  """Shapes of the model features of one (global) batch."""
  lengths = feature_converter(config).get_model_feature_lengths(config.task_feature_lengths)
  batch = config.batch_size if batch_size is None else batch_size
  return {k: (batch, v) for k, v in lengths.items()}


def train_batches(config: DataConfig, *, skip_batches: int = 0,
                  num_epochs: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This process's batches (``batch_size / process_count`` rows each), forever.

  ``skip_batches`` drops the batches a previous run consumed.
  """
  ds = seqio.get_dataset(
      config.mixture_or_task_name, task_feature_lengths=dict(config.task_feature_lengths),
      dataset_split=config.split, shuffle=config.shuffle, num_epochs=num_epochs,
      feature_converter=feature_converter(config), seed=config.seed, use_cached=False,
      shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count()))
  local_batch = config.batch_size // jax.process_count()
  ds = ds.batch(local_batch, drop_remainder=True)
  if skip_batches:
    ds = ds.skip(skip_batches)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(2).as_numpy_iterator()


def count_tokens(batch: Mapping[str, np.ndarray]) -> int:
  """Non-padding tokens the model reads and predicts in a batch (for tokens/s)."""
  keys = [k for k in ("encoder_input_tokens", "decoder_target_tokens") if k in batch]
  return int(sum(np.count_nonzero(batch[k]) for k in keys))
