"""Hand-written x86 decode kernels (AMX matmul, AVX-512 attention) for one CPU device.

At decode batch sizes a Llama step on XLA:CPU is bound by how fast weights and
the KV cache are read: XLA's bf16 dot streams weights at ~9 GB/s from one
thread, and attention becomes ~100 tiny batched dots per layer. The kernels in
``amx_decode.cc`` read weights packed once into AMX tiles and a
query's cache slots in one pass, and split their work over XLA's intra-op
threads (SmolLM2-135M, bf16, batch 32, 2 cores: see ``benchmarks/``).

The library is compiled on first use with the system C++ compiler against
jaxlib's XLA FFI headers and cached under ``$CDC_JAX_KERNEL_CACHE`` (default
``~/.cache/cdc_jax/kernels``), keyed by the source and jaxlib version.
``unavailable_reason()`` says why the kernels cannot run here (not x86-64
Linux, no AMX-BF16/AVX-512 in /proc/cpuinfo, no compiler, a failed build, AMX
state refused by the OS); callers then keep the XLA path.

Packing: a weight ``[*out, *in]`` is stored in the same shape, with its
``N x K`` elements (``N = prod(out)``, ``K = prod(in)``) permuted to
``[N/32][K/32][2][16][32]``: per pair of 16-column blocks and 32-wide slice of
K, the two AMX B tiles (16 k-pairs x 16 columns x 2) back to back.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = pathlib.Path(__file__).parent / "amx_decode.cc"
_CPU_FLAGS = ("amx_tile", "amx_bf16", "avx512f", "avx512bw", "avx512_bf16")
_TARGETS = {"cdc_amx_matmul": "CdcAmxMatmul", "cdc_amx_gated_matmul": "CdcAmxGatedMatmul",
            "cdc_argmax": "CdcArgmax", "cdc_decode_attention": "CdcDecodeAttention"}
MAX_GROUPS = 16
MAX_HEAD_DIM = 256


def _cpu_flags() -> set[str]:
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return set()
  for line in text.splitlines():
    if line.startswith("flags"):
      return set(line.split(":", 1)[1].split())
  return set()


def hardware_reason() -> str | None:
  """Why this machine cannot run the kernels at all (None: x86-64 Linux with the CPU flags)."""
  if platform.system() != "Linux" or platform.machine() != "x86_64":
    return f"needs x86-64 Linux, this is {platform.system()} {platform.machine()}"
  missing = [f for f in _CPU_FLAGS if f not in _cpu_flags()]
  if missing:
    return f"the CPU lacks {', '.join(missing)} (/proc/cpuinfo)"
  return None


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> str | None:
  """None if the kernels are built and registered here (``load``), else why not."""
  reason = hardware_reason()
  if reason is not None:
    return reason
  if _compiler() is None:
    return "no C++ compiler ($CXX, g++ or c++) on PATH"
  try:
    library = ctypes.cdll.LoadLibrary(str(_build()))
  except (OSError, RuntimeError) as error:  # A failed build names its command and errors.
    return str(error)[:2000]
  library.CdcAmxPermitted.restype = ctypes.c_bool
  if not library.CdcAmxPermitted():
    return "the kernel refused AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM; Linux >= 5.16)"
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(_target(name), jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")
  return None


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "g++", "c++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("CDC_JAX_KERNEL_CACHE")
  return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "cdc_jax" / "kernels"


@functools.lru_cache(maxsize=None)
def _key() -> str:
  """Names this build: the source and the jaxlib version it is compiled against."""
  return hashlib.sha256(SOURCE.read_bytes() + jaxlib.__version__.encode()).hexdigest()[:16]


def _target(name: str) -> str:
  """The registered FFI name of kernel ``name``.

  It carries the build key, so a program in a persistent compilation cache
  never calls a kernel of another build (the cache key covers the HLO only).
  """
  return f"{name}_{_key()}"


def _build() -> pathlib.Path:
  """Compiles the kernel library (once per source and jaxlib version); returns its path."""
  target = _cache_dir() / f"amx_decode-{_key()}.so"
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  # Built beside the target and renamed: concurrent builders (test workers) never
  # load a half-written library.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
  os.close(fd)
  cmd = [_compiler(), "-O3", "-std=c++17", "-shared", "-fPIC", "-mamx-tile", "-mamx-bf16",
         "-mavx512f", "-mavx512bw", "-mavx512bf16", "-I", jax.ffi.include_dir(), str(SOURCE),
         "-o", tmp]
  result = subprocess.run(cmd, capture_output=True, text=True)
  if result.returncode:
    os.unlink(tmp)
    raise RuntimeError(f"building {SOURCE} failed ({' '.join(cmd)}):\n{result.stderr[-4000:]}")
  os.replace(tmp, target)
  return target


def load() -> None:
  """Builds (once) and registers the kernels with XLA:CPU.

  Raises RuntimeError with ``unavailable_reason()`` where they cannot run.
  """
  reason = unavailable_reason()
  if reason is not None:
    raise RuntimeError(f"cdc_jax CPU kernels unavailable: {reason}")


def matmul_shape_error(out_size: int, in_size: int) -> str | None:
  """Why a ``[out_size, in_size]`` weight cannot use the AMX matmul (None if it can)."""
  if out_size % 32 or in_size % 32:
    return f"weight [{out_size}, {in_size}]: both sizes must be multiples of 32"
  return None


def pack_weight(weight: np.ndarray, num_in: int) -> np.ndarray:
  """``weight [*out, *in]`` (bf16) in the AMX tile order, same shape (module docstring)."""
  n = math.prod(weight.shape[:weight.ndim - num_in])
  k = math.prod(weight.shape[weight.ndim - num_in:])
  error = matmul_shape_error(n, k)
  if error:
    raise ValueError(f"cannot pack {error}")
  w = np.asarray(weight).reshape(n // 32, 2, 16, k // 32, 16, 2)  # (pair, j, col, slice, r, e)
  return np.ascontiguousarray(w.transpose(0, 3, 1, 4, 2, 5)).reshape(weight.shape)


def unpack_weight(packed: np.ndarray, num_in: int) -> np.ndarray:
  """The inverse of ``pack_weight``."""
  n = math.prod(packed.shape[:packed.ndim - num_in])
  k = math.prod(packed.shape[packed.ndim - num_in:])
  w = np.asarray(packed).reshape(n // 32, k // 32, 2, 16, 16, 2)  # (pair, slice, j, r, col, e)
  return np.ascontiguousarray(w.transpose(0, 2, 4, 1, 3, 5)).reshape(packed.shape)


def packed_rows(packed: jax.Array, rows: jax.Array) -> jax.Array:
  """Rows ``packed[rows]`` of a packed 2-D weight, unpacked (an embedding lookup)."""
  n, k = packed.shape
  tiles = packed.reshape(n // 32, k // 32, 2, 16, 16, 2)
  pair, j, col = rows // 32, (rows // 16) % 2, rows % 16
  picked = tiles[pair, :, j, :, col, :]  # [*rows, k/32, 16, 2]
  return picked.reshape(rows.shape + (k,))


def _rows(x: jax.Array, num_in: int) -> tuple[jax.Array, tuple[int, ...], int]:
  """x as bf16 ``[rows padded to 16, K]``, its leading shape and row count."""
  lead = x.shape[:x.ndim - num_in]
  rows = math.prod(lead)
  flat = x.reshape(rows, -1).astype(jnp.bfloat16)
  padded = -(-rows // 16) * 16
  if padded != rows:
    flat = jnp.pad(flat, ((0, padded - rows), (0, 0)))
  return flat, lead, rows


def matmul(x: jax.Array, packed: jax.Array, num_in: int) -> jax.Array:
  """``x[..., *in] -> [..., *out]`` (float32) for a packed weight ``[*out, *in]``."""
  out_shape = packed.shape[:packed.ndim - num_in]
  flat, lead, rows = _rows(x, num_in)
  y = jax.ffi.ffi_call(_target("cdc_amx_matmul"), jax.ShapeDtypeStruct(
      (flat.shape[0], math.prod(out_shape)), jnp.float32))(flat, packed)
  return y[:rows].reshape(lead + out_shape)


def pack_gated(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
  """``[2m, k]``: gate and up ``[m, k]`` interleaved in 16-row blocks, then packed.

  Each packed pair of 16-column blocks is then (gate block j, up block j), so
  one tile pass yields both halves of the same 16 features.
  """
  m, k = gate.shape
  if up.shape != gate.shape or m % 16:
    raise ValueError(f"gate {gate.shape} and up {up.shape} must match, with rows % 16 == 0")
  both = np.stack([gate.reshape(m // 16, 16, k), up.reshape(m // 16, 16, k)], axis=1)
  return pack_weight(both.reshape(2 * m, k), num_in=1)


def gated_matmul(x: jax.Array, packed: jax.Array) -> jax.Array:
  """``bf16(silu(x . gate^T) * (x . up^T))`` ``[..., m]`` for ``pack_gated`` weights ``[2m, k]``."""
  flat, lead, rows = _rows(x, 1)
  width = packed.shape[0] // 2
  h = jax.ffi.ffi_call(_target("cdc_amx_gated_matmul"), jax.ShapeDtypeStruct(
      (flat.shape[0], width), jnp.bfloat16))(flat, packed)
  return h[:rows].reshape(lead + (width,))


def argmax(logits: jax.Array) -> jax.Array:
  """int32 ``argmax`` over the last axis (first index on ties) of float32 logits."""
  lead = logits.shape[:-1]
  flat = logits.reshape(-1, logits.shape[-1]).astype(jnp.float32)
  ids = jax.ffi.ffi_call(_target("cdc_argmax"),
                         jax.ShapeDtypeStruct(flat.shape[:1], jnp.int32))(flat)
  return ids.reshape(lead)


def attention_shape_error(groups: int, head_dim: int) -> str | None:
  """Why decode attention with these shapes cannot use the kernel (None if it can)."""
  if groups > MAX_GROUPS or head_dim % 16 or head_dim > MAX_HEAD_DIM:
    return (f"{groups} query heads per kv head (max {MAX_GROUPS}) and head_dim {head_dim} "
            f"(a multiple of 16, max {MAX_HEAD_DIM})")
  return None


def decode_attention(qkv: jax.Array, cos: jax.Array, sin: jax.Array, keys: jax.Array,
                     values: jax.Array, valid: jax.Array, index: jax.Array, *, groups: int,
                     scale: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A decode step's attention for one new token per row, fused with RoPE and the cache write.

  qkv ``[batch, (heads + 2 kv_heads) * head_dim]`` float32: the q, k and v
  projections before RoPE, side by side (``heads = kv_heads * groups``);
  cos/sin ``[batch, head_dim]``: each row's RoPE tables; keys/values
  ``[batch, kv_heads, slots, head_dim]`` bf16; valid ``[batch, slots]`` (the
  new slot included); index: int32 scalar, the slot the new key/value go to.
  Query head ``i`` uses kv head ``i // groups``. Returns the attention output
  ``[batch, kv_heads, groups, head_dim]`` float32 of ``bf16(scale * rope(q))``
  over slots ``[0, index]`` (no later slot is read), and the updated keys and
  values (written in place where XLA can).
  """
  batch, kv_heads, _, head_dim = keys.shape
  shapes = (jax.ShapeDtypeStruct((batch, kv_heads, groups, head_dim), jnp.float32),
            jax.ShapeDtypeStruct(keys.shape, keys.dtype),
            jax.ShapeDtypeStruct(values.shape, values.dtype))
  f32 = jnp.float32
  return jax.ffi.ffi_call(_target("cdc_decode_attention"), shapes,
                          input_output_aliases={3: 1, 4: 2})(
      qkv.reshape(batch, -1).astype(f32), cos.astype(f32), sin.astype(f32), keys, values,
      valid.astype(jnp.bool_), jnp.asarray(index, jnp.int32), scale=np.float32(scale))
