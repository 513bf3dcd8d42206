"""Batched, jitted decoding with restored parameters (shared by evaluate and infer)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np

from cdc_jax import checkpoints, partitioning
from cdc_jax.models.encoder_decoder import EncoderDecoderModel


def load_params(model: EncoderDecoderModel, checkpoint: str, mesh, *,
                input_shapes: dict[str, tuple[int, ...]]) -> tuple[Any, int | None]:
  """Parameters from a cdc checkpoint (model dir or step dir) or a HF T5 directory,
  placed on ``mesh`` by their logical axes; returns ``(params, step)``."""
  path = Path(checkpoint)
  if (path / "config.json").exists():
    from cdc_jax.models import hf_t5
    _, params = hf_t5.load_hf_t5(path)
    step = None
  else:
    params, step = checkpoints.restore_params(path)
  shardings = partitioning.param_shardings(model.param_logical_axes(input_shapes), mesh)
  expected = jax.tree.map(lambda s: tuple(s.shape), jax.eval_shape(
      functools.partial(model.init_params, input_shapes=input_shapes), jax.random.key(0)))
  got = jax.tree.map(lambda x: tuple(x.shape), params)
  if expected != got:
    raise ValueError(f"checkpoint {checkpoint} does not fit the model config "
                     "(vocabulary size, model size or T5 version differ)")
  return jax.device_put(params, shardings), step


class Predictor:
  """Greedy (or beam) decoding of encoder inputs in fixed-size, padded batches."""

  def __init__(self, model: EncoderDecoderModel, params: Any, mesh, *, batch_size: int,
               max_decode_len: int, num_beams: int = 1):
    self.model, self.params, self.mesh = model, params, mesh
    self.batch_size, self.max_decode_len, self.num_beams = batch_size, max_decode_len, num_beams
    predict = functools.partial(model.predict_batch, max_decode_len=max_decode_len,
                                num_beams=num_beams)
    with partitioning.activate(mesh):
      self._predict = jax.jit(lambda p, tokens: predict(p, {"encoder_input_tokens": tokens}))

  def predict(self, encoder_inputs: np.ndarray) -> np.ndarray:
    """Decoded tokens (n, max_decode_len) for ``encoder_inputs`` (n, length)."""
    n = encoder_inputs.shape[0]
    out = []
    for start in range(0, n, self.batch_size):
      chunk = encoder_inputs[start:start + self.batch_size]
      padded = np.zeros((self.batch_size,) + chunk.shape[1:], chunk.dtype)
      padded[:len(chunk)] = chunk
      tokens = partitioning.shard_batch(padded, self.mesh)
      with partitioning.activate(self.mesh):
        out.append(np.asarray(jax.device_get(self._predict(self.params, tokens)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, self.max_decode_len), np.int32)


def restore_predictor(model: EncoderDecoderModel, checkpoint: str, *, mesh_shape: Sequence[int],
                      batch_size: int, task_feature_lengths: dict[str, int],
                      num_beams: int = 1) -> tuple[Predictor, int | None]:
  """A :class:`Predictor` over a checkpoint's parameters on a new mesh; returns it and the step."""
  mesh = partitioning.make_mesh(mesh_shape)
  shapes = {"encoder_input_tokens": (batch_size, task_feature_lengths["inputs"]),
            "decoder_input_tokens": (batch_size, task_feature_lengths["targets"])}
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
