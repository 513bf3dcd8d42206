"""Prediction with a checkpoint: restored parameters and a batched, jitted ``Predictor``.

Shared by evaluation and inference. The search itself (greedy or beam) is the
model's ``predict_batch``; here parameters are restored, checked against the
model config, placed on a mesh, and fixed-size padded batches are decoded.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from cdc_jax.models import partitioning
from cdc_jax.student import checkpoints


def load_params(model: Any, checkpoint: str, mesh, *,
                input_shapes: dict[str, tuple[int, ...]]) -> tuple[Any, int | None]:
  """The model's full parameters, placed on ``mesh`` by their logical axes; ``(params, step)``.

  ``checkpoint``: a cdc checkpoint (model dir or step dir: its trained
  parameters, with the model's frozen base where it has one, e.g. LoRA), or
  weights the model reads itself (a HF T5 dir; a GGUF file or HF Llama dir).
  """
  path = Path(checkpoint)
  if (path / "config.json").exists() or path.is_file():
    params, step = model.load_external(path), None
    logical = model.param_logical_axes(input_shapes)
    frozen_logical = model.frozen_logical_axes()
    logical = model.merge_params(logical, frozen_logical)
    expected = model.merge_params(_shapes(model, input_shapes), _frozen_shapes(model))
  else:
    trained, step = checkpoints.restore_params(path)
    checkpoints.check_base_weights(checkpoints.restore_meta(path), model.base_fingerprint(),
                                   checkpoint)
    got = jax.tree.map(lambda x: tuple(x.shape), trained)
    if got != _shapes(model, input_shapes):
      raise ValueError(f"checkpoint {checkpoint} does not fit the model config "
                       "(vocabulary size, model size, LoRA rank or T5 version differ)")
    frozen = None if model.pretrained is None else model.pretrained.frozen
    params = model.merge_params(trained, frozen)
    logical = model.merge_params(model.param_logical_axes(input_shapes),
                                 model.frozen_logical_axes())
    expected = None
  if expected is not None and jax.tree.map(lambda x: tuple(x.shape), params) != expected:
    raise ValueError(f"{checkpoint} does not fit the model config")
  return jax.device_put(params, partitioning.param_shardings(logical, mesh)), step


def _shapes(model: Any, input_shapes: dict[str, tuple[int, ...]]) -> Any:
  return jax.tree.map(lambda s: tuple(s.shape), jax.eval_shape(
      functools.partial(model.init_params, input_shapes=input_shapes), jax.random.key(0)))


def _frozen_shapes(model: Any) -> Any:
  frozen = None if model.pretrained is None else model.pretrained.frozen
  return None if frozen is None else jax.tree.map(lambda x: tuple(x.shape), frozen)


class Predictor:
  """Greedy (or beam) decoding in fixed-size, padded batches of the model's predict features."""

  def __init__(self, model: Any, params: Any, mesh, *, batch_size: int,
               max_decode_len: int, num_beams: int = 1):
    self.model, self.params, self.mesh = model, params, mesh
    self.batch_size, self.max_decode_len, self.num_beams = batch_size, max_decode_len, num_beams
    predict = functools.partial(model.predict_batch, max_decode_len=max_decode_len,
                                num_beams=num_beams)
    with partitioning.activate(mesh):
      self._predict = jax.jit(predict)

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Decoded tokens (n, max_decode_len) for features (n, length) each.

    ``features``: the model's ``PREDICT_FEATURES`` (T5: ``encoder_input_tokens``).
    """
    n = len(next(iter(features.values())))
    out = []
    for start in range(0, n, self.batch_size):
      chunk = {k: v[start:start + self.batch_size] for k, v in features.items()}
      rows = len(next(iter(chunk.values())))
      padded = {}
      for k, v in chunk.items():
        padded[k] = np.zeros((self.batch_size,) + v.shape[1:], v.dtype)
        padded[k][:rows] = v
      batch = partitioning.shard_batch(padded, self.mesh)
      with partitioning.activate(self.mesh):
        out.append(np.asarray(jax.device_get(self._predict(self.params, batch)))[:rows])
    return np.concatenate(out) if out else np.zeros((0, self.max_decode_len), np.int32)


def restore_predictor(model: Any, checkpoint: str, *, mesh_shape: Sequence[int],
                      batch_size: int, task_feature_lengths: dict[str, int],
                      num_beams: int = 1) -> tuple[Predictor, int | None]:
  """A :class:`Predictor` over a checkpoint's parameters on a new mesh; returns it and the step."""
  mesh = partitioning.make_mesh(mesh_shape)
  lengths = model.FEATURE_CONVERTER_CLS(pack=False).get_model_feature_lengths(
      dict(task_feature_lengths))
  shapes = {k: (batch_size, v) for k, v in lengths.items()}
  params, step = load_params(model, checkpoint, mesh, input_shapes=shapes)
  return Predictor(model, params, mesh, batch_size=batch_size,
                   max_decode_len=task_feature_lengths["targets"], num_beams=num_beams), step


def pad_rows(rows: Iterable[Sequence[int]], length: int) -> np.ndarray:
  """Token lists -> a zero-padded int32 matrix, each row cut to ``length``."""
  rows = list(rows)
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    row = list(row)[:length]
    out[i, :len(row)] = row
  return out


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
  for start in range(0, len(items), size):
    yield items[start:start + size]
