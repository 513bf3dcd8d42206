"""The T5 student's hyper-parameters: one frozen dataclass and named presets.

Presets follow the published T5 checkpoints: version '1.0' (ReLU MLP, output
layer tied to the input embedding) and '1.1' (gated-GELU MLP, separate output
layer; also Flan-T5). ``tiny`` is ours, for tests and local debugging.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

ACTIVATIONS = ("relu", "gelu", "gelu_exact", "silu", "linear")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
VERSIONS = ("1.0", "1.1")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of a T5 encoder-decoder.

  Attributes:
    vocab_size: rows of the (shared) token embedding.
    emb_dim: model width (``d_model``).
    num_heads: attention heads per layer.
    num_encoder_layers: encoder blocks.
    num_decoder_layers: decoder blocks.
    head_dim: width of one head (``d_kv``); need not be emb_dim / num_heads.
    mlp_dim: hidden width of the MLP (``d_ff``).
    mlp_activations: one activation per input projection, multiplied together:
      ('relu',) for T5 1.0, ('gelu', 'linear') for gated-GELU (T5 1.1,
      Flan-T5). 'gelu' is the tanh approximation (HF 'gelu_new'),
      'gelu_exact' the erf form (HF 'gelu').
    dropout_rate: dropout on embeddings, attention weights, MLP hidden units
      and sub-layer outputs; only applied when dropout is enabled.
    dtype: compute dtype name; parameters are always stored in float32.
    logits_via_embedding: tie the output layer to the token embedding (T5 1.0);
      the decoder output is then scaled by emb_dim**-0.5 as in T5 and HF.
    relative_attention_num_buckets: buckets of the relative position bias.
    relative_attention_max_distance: distance beyond which buckets saturate.
    layer_norm_epsilon: epsilon of the RMS layer norm.
  """
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  head_dim: int = 64
  mlp_dim: int = 1024
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.1
  dtype: str = "float32"
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6

  def __post_init__(self):
    # Gin and JSON hand us lists; a tuple keeps the config hashable.
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for field in ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                  "num_decoder_layers", "head_dim", "mlp_dim",
                  "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"T5Config.{field} must be a positive int, got {value!r}")
    if not self.mlp_activations or any(a not in ACTIVATIONS for a in self.mlp_activations):
      raise ValueError(
          f"T5Config.mlp_activations must be a non-empty tuple of {ACTIVATIONS}, "
          f"got {self.mlp_activations!r}")
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"T5Config.dtype must be one of {COMPUTE_DTYPES}, got {self.dtype!r}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")

  @property
  def compute_dtype(self) -> jnp.dtype:
    """The compute dtype as a numpy dtype."""
    return jnp.dtype(self.dtype)


# (emb_dim, num_heads, num_encoder_layers, num_decoder_layers, head_dim, mlp_dim)
_SIZES: dict[str, dict[str, tuple[int, int, int, int, int, int]]] = {
    "1.0": {
        "tiny": (64, 4, 2, 2, 16, 128),
        "small": (512, 8, 6, 6, 64, 2048),
        "base": (768, 12, 12, 12, 64, 3072),
        "large": (1024, 16, 24, 24, 64, 4096),
        "3B": (1024, 32, 24, 24, 128, 16384),
        "11B": (1024, 128, 24, 24, 128, 65536),
    },
    "1.1": {
        "tiny": (64, 4, 2, 2, 16, 128),
        "small": (512, 6, 8, 8, 64, 1024),
        "base": (768, 12, 12, 12, 64, 2048),
        "large": (1024, 16, 24, 24, 64, 2816),
        "xl": (2048, 32, 24, 24, 64, 5120),
        "xxl": (4096, 64, 24, 24, 64, 10240),
    },
}


def t5_config(size: str, *, version: str = "1.1", vocab_size: int = 32128,
              dropout_rate: float = 0.1, dtype: str = "float32") -> T5Config:
  """A T5Config with the dimensions of a published T5 size.

  Args:
    size: 'tiny', 'small', 'base', 'large' (both versions), '3B', '11B' (1.0),
      'xl', 'xxl' (1.1 / Flan-T5).
    version: '1.0' (ReLU, tied output) or '1.1' (gated-GELU, untied output).
    vocab_size: rows of the embedding (32128 for the T5 SentencePiece model).
    dropout_rate: see T5Config.
    dtype: compute dtype name, see T5Config.
  """
  if version not in VERSIONS:
    raise ValueError(f"unknown T5 version {version!r}: expected one of {VERSIONS}")
  sizes = _SIZES[version]
  if size not in sizes:
    raise ValueError(f"unknown T5 {version} size {size!r}: expected one of {tuple(sizes)}")
  emb_dim, num_heads, enc_layers, dec_layers, head_dim, mlp_dim = sizes[size]
  return T5Config(
      vocab_size=vocab_size, emb_dim=emb_dim, num_heads=num_heads,
      num_encoder_layers=enc_layers, num_decoder_layers=dec_layers,
      head_dim=head_dim, mlp_dim=mlp_dim,
      mlp_activations=("relu",) if version == "1.0" else ("gelu", "linear"),
      dropout_rate=dropout_rate, dtype=dtype,
      logits_via_embedding=version == "1.0")
