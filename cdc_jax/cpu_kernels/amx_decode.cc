// CPU decode kernels for the jax teacher backend (x86-64 with AMX-BF16 and AVX-512).
//
// XLA:CPU streams a decoder's weights at about 9 GB/s from one thread and runs a
// decode step's attention as ~100 tiny batched dots; at batch 32 those two are
// most of a SmolLM2 step. These kernels are called through the XLA FFI and
// split their work over XLA's own intra-op thread pool:
//   cdc_amx_matmul:       y[m, n] f32 = x[m, k] bf16 . W[n, k]^T, with W packed
//                         once into AMX tiles (see cpu_kernels.pack_weight);
//   cdc_amx_gated_matmul: bf16(silu(x . G^T) * (x . U^T)), G and U packed together;
//   cdc_argmax:           greedy token ids from f32 logits;
//   cdc_decode_attention: a decode step's attention (one new token per row),
//                         fused with RoPE and the cache write; reads only the
//                         slots filled so far of a [batch, kv_heads, slots, d] cache.
// Numerics follow the XLA path: bf16 products accumulated in f32; softmax in
// f32; probabilities rounded to bf16 before the weighted sum of the values.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Linux hands out AMX tile state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
const bool kAmxPermitted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;

// ---------------------------------------------------------------------------
// Work split over XLA's intra-op pool. Chunks are claimed from a counter, so a
// helper that starts late (its thread busy with another op) finds nothing left
// and the caller never waits for it to start, only for claimed chunks to end.

template <typename Fn>
struct Job {
  Fn fn;
  int64_t chunks;
  std::atomic<int64_t> next{0}, done{0};
  Job(Fn f, int64_t n) : fn(std::move(f)), chunks(n) {}
  void Work() {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      fn(c);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t chunks, Fn fn) {
  auto job = std::make_shared<Job<Fn>>(std::move(fn), chunks);
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([job] { job->Work(); });
  job->Work();
  // Spin briefly (chunks take microseconds), then yield: another process may share the cores.
  for (int spins = 0; job->done.load(std::memory_order_acquire) < chunks; ++spins) {
    if (spins < 4096) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
}

// ---------------------------------------------------------------------------
// AMX matmul. Packed weight layout: [n/32][k/32][2][16][32] bf16: for each pair
// of 16-column blocks and each 32-wide slice of k, the two B tiles (16 k-pairs
// x 16 columns x 2, "VNNI" order) back to back, so a pair streams sequentially.

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline __m512 Exp(__m512 x);

// Column pairs [pair_begin, pair_end) of x . W^T; x rows are a multiple of 16.
// kGated: each pair is (gate block, up block) of 16 features, and the output is
// bf16(silu(gate) * up) [m, n / 2]; otherwise y [m, n] f32.
template <bool kGated>
void MatmulPairs(const uint16_t* x, const uint16_t* w, void* out, int64_t m, int64_t n,
                 int64_t k, int64_t pair_begin, int64_t pair_end) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {  // tmm0-3: C (16 x 16 f32), 4-5: A (x), 6-7: B (W).
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const int64_t slices = k / 32, m_tiles = m / 16;
  alignas(64) float c[32][32];  // kGated: rows x [gate 16 | up 16]
  // Blocks of kRowTiles row tiles: a block of x and this chunk's weights stay in L2
  // while every pair of the chunk passes over the block (prefill: thousands of rows).
  constexpr int64_t kRowTiles = 8;
  for (int64_t m0 = 0; m0 < m_tiles; m0 += kRowTiles)
  for (int64_t p = pair_begin; p < pair_end; ++p) {
    const uint16_t* wp = w + p * slices * 1024;
    for (int64_t mt = m0; mt < std::min(m_tiles, m0 + kRowTiles); mt += 2) {
      const bool two = mt + 1 < m_tiles;
      const uint16_t* x0 = x + mt * 16 * k;
      const uint16_t* x1 = x0 + 16 * k;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t s = 0; s < slices; ++s) {
        const uint16_t* b = wp + s * 1024;
        _tile_loadd(6, b, 64);
        _tile_loadd(7, b + 512, 64);
        _tile_loadd(4, x0 + s * 32, k * 2);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (two) {
          _tile_loadd(5, x1 + s * 32, k * 2);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
      if constexpr (!kGated) {
        float* y0 = static_cast<float*>(out) + mt * 16 * n + p * 32;
        _tile_stored(0, y0, n * 4);
        _tile_stored(1, y0 + 16, n * 4);
        if (two) {
          _tile_stored(2, y0 + 16 * n, n * 4);
          _tile_stored(3, y0 + 16 * n + 16, n * 4);
        }
      } else {
        _tile_stored(0, &c[0][0], 128);
        _tile_stored(1, &c[0][16], 128);
        if (two) {
          _tile_stored(2, &c[16][0], 128);
          _tile_stored(3, &c[16][16], 128);
        }
        const int64_t width = n / 2;
        uint16_t* h = static_cast<uint16_t*>(out) + mt * 16 * width + p * 16;
        for (int64_t r = 0; r < (two ? 32 : 16); ++r) {
          const __m512 gate = _mm512_load_ps(&c[r][0]), up = _mm512_load_ps(&c[r][16]);
          // silu(g) * u = g * u / (1 + e^-g), in f32 as the XLA path.
          const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), gate));
          const __m512 v = _mm512_div_ps(_mm512_mul_ps(gate, up),
                                         _mm512_add_ps(_mm512_set1_ps(1.0f), e));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + r * width),
                              (__m256i)_mm512_cvtneps_pbh(v));  // Round to nearest even.
        }
      }
    }
  }
  _tile_release();
}

// ---------------------------------------------------------------------------
// Decode attention, one (row, kv head) at a time.

constexpr int64_t kMaxGroups = 16;   // query heads per kv head
constexpr int64_t kMaxHeadDim = 256;

inline __m512 LoadBf16(const uint16_t* p) {  // 16 bf16 -> 16 f32, exactly.
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

inline uint16_t FloatToBf16(float f) {  // Round to nearest even, as XLA's convert.
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

// e^x (Cephes' expf polynomial); e^-87.3 below -87.3, +inf above ~88.7.
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

constexpr int64_t kAhead = 16;  // Slots prefetched ahead: the cache streams from L3/DRAM.

inline void Prefetch(const uint16_t* row, int64_t d) {
  for (int64_t i = 0; i < d; i += 32)
    _mm_prefetch(reinterpret_cast<const char*>(row + i), _MM_HINT_T0);
}

// The 16 lane sums of x[0..15], in order: a transpose-and-add tree (33 shuffles and adds
// where 16 horizontal reductions take about 128).
inline __m512 Sum16(const __m512* x) {
  __m512 quad[4];
  for (int q = 0; q < 4; ++q) {  // 128-bit block i of quad[q]: (sum of block i of x[4q + j])_j
    const __m512* v = x + 4 * q;
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
    quad[q] = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
  }
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(quad[0], quad[1], 0x44),
                                   _mm512_shuffle_f32x4(quad[0], quad[1], 0xEE));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(quad[2], quad[3], 0x44),
                                   _mm512_shuffle_f32x4(quad[2], quad[3], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
}

// scores[g, t] = q[g] . k[t]: bf16 pairs multiplied and summed in f32 (vdpbf16ps).
void Scores(const uint16_t* q, const uint16_t* k, int64_t slots, int64_t groups, int64_t d,
            float* scores) {
  const int64_t vecs = (d + 31) / 32;  // 32 bf16 per register; the last may be partial.
  const __mmask32 last = d % 32 ? static_cast<__mmask32>((1ull << (d % 32)) - 1) : ~0u;
  auto load = [&](const uint16_t* p, int64_t j) {
    return (__m512bh)_mm512_maskz_loadu_epi16(j + 1 == vecs ? last : ~0u, p + j * 32);
  };
  __m512bh qv[kMaxGroups][kMaxHeadDim / 32];
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < vecs; ++j) qv[g][j] = load(q + g * d, j);
  auto dot = [&](int64_t g, int64_t t) {
    __m512 acc = _mm512_dpbf16_ps(_mm512_setzero_ps(), qv[g][0], load(k + t * d, 0));
    for (int64_t j = 1; j < vecs; ++j) acc = _mm512_dpbf16_ps(acc, qv[g][j], load(k + t * d, j));
    return acc;
  };
  int64_t t0 = 0;
  for (; t0 + 16 <= slots; t0 += 16) {  // 16 slots a group; their key rows stay in L1.
    for (int64_t i = 0; i < 16 && t0 + kAhead + i < slots; i += 2)
      Prefetch(k + (t0 + kAhead + i) * d, 2 * d);
    for (int64_t g = 0; g < groups; ++g) {
      __m512 acc[16];
      for (int64_t i = 0; i < 16; ++i) acc[i] = dot(g, t0 + i);
      _mm512_storeu_ps(scores + g * slots + t0, Sum16(acc));
    }
  }
  for (int64_t t = t0; t < slots; ++t)
    for (int64_t g = 0; g < groups; ++g) scores[g * slots + t] = _mm512_reduce_add_ps(dot(g, t));
}

// q [groups, d], k/v [slots, d] (bf16), valid [slots]; out [groups, d] f32.
// scores, probs: groups * slots floats of scratch (probs hold bf16-rounded values).
void AttendOne(const uint16_t* q, const uint16_t* k, const uint16_t* v, const bool* valid,
               int64_t slots, int64_t groups, int64_t d, float* out, float* scores,
               float* probs) {
  const int64_t vecs = d / 16;
  const float floor = -3.4028234663852886e38f;  // As the XLA path's finite mask floor.
  Scores(q, k, slots, groups, d, scores);
  for (int64_t g = 0; g < groups; ++g) {
    float* s = scores + g * slots;
    float top = floor;
    for (int64_t t = 0; t < slots; ++t) {
      if (!valid[t]) s[t] = floor;
      top = std::max(top, s[t]);
    }
    const __m512 top_v = _mm512_set1_ps(top);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t t = 0; t < slots; t += 16) {
      const __mmask16 live =
          slots - t >= 16 ? 0xffff : static_cast<__mmask16>((1u << (slots - t)) - 1);
      const __m512 e = _mm512_maskz_mov_ps(
          live, Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, s + t), top_v)));
      _mm512_mask_storeu_ps(s + t, live, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t t = 0; t < slots; t += 16) {  // bf16-rounded, kept as f32 for the FMAs.
      const __mmask16 live =
          slots - t >= 16 ? 0xffff : static_cast<__mmask16>((1u << (slots - t)) - 1);
      const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(live, s + t), inv);
      _mm512_mask_storeu_ps(probs + g * slots + t, live, _mm512_cvtpbh_ps(_mm512_cvtneps_pbh(p)));
    }
  }
  __m512 acc[kMaxGroups][kMaxHeadDim / 16];
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < vecs; ++j) acc[g][j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < slots; ++t) {
    if (t + kAhead < slots) Prefetch(v + (t + kAhead) * d, d);
    __m512 vf[kMaxHeadDim / 16];
    for (int64_t j = 0; j < vecs; ++j) vf[j] = LoadBf16(v + t * d + j * 16);
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 p = _mm512_set1_ps(probs[g * slots + t]);
      for (int64_t j = 0; j < vecs; ++j) acc[g][j] = _mm512_fmadd_ps(p, vf[j], acc[g][j]);
    }
  }
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < vecs; ++j) _mm512_storeu_ps(out + g * d + j * 16, acc[g][j]);
}

int64_t ChunksFor(int64_t items, int64_t threads) {  // ~4 chunks per thread.
  return std::min<int64_t>(items, 4 * std::max<int64_t>(threads, 1));
}

}  // namespace

// x [m, k] bf16 (m a multiple of 16), w packed [n * k] bf16 -> y [m, n] f32, or with
// kGated -> h [m, n / 2] bf16 (see MatmulPairs).
template <bool kGated>
ffi::Error MatmulImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                      ffi::Result<ffi::AnyBuffer> y) {
  if (!kAmxPermitted) return ffi::Error(ffi::ErrorCode::kUnavailable, "AMX tiles not permitted");
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || yd.size() != 2)
    return ffi::Error::InvalidArgument("cdc_amx_matmul: x and y must be 2-D");
  const int64_t m = xd[0], k = xd[1], n = kGated ? 2 * yd[1] : yd[1];
  if (m % 16 || k % 32 || n % 32 || yd[0] != m || w.element_count() != static_cast<size_t>(n * k))
    return ffi::Error::InvalidArgument("cdc_amx_matmul: shapes must be x[16i, 32j], w[32l * 32j]");
  const auto* xp = reinterpret_cast<const uint16_t*>(x.untyped_data());
  const auto* wp = reinterpret_cast<const uint16_t*>(w.untyped_data());
  void* yp = y->untyped_data();
  const int64_t pairs = n / 32, chunks = ChunksFor(pairs, pool.num_threads());
  ParallelFor(pool, chunks, [=](int64_t c) {
    MatmulPairs<kGated>(xp, wp, yp, m, n, k, pairs * c / chunks, pairs * (c + 1) / chunks);
  });
  return ffi::Error::Success();
}

// logits [m, n] f32 -> int32 [m]: the first index of each row's maximum.
ffi::Error ArgmaxImpl(ffi::ThreadPool pool, ffi::AnyBuffer logits,
                      ffi::Result<ffi::AnyBuffer> ids) {
  const auto ld = logits.dimensions();
  if (ld.size() != 2 || ld[1] < 1) return ffi::Error::InvalidArgument("cdc_argmax: logits [m, n]");
  const int64_t m = ld[0], n = ld[1];
  const auto* lp = reinterpret_cast<const float*>(logits.untyped_data());
  auto* ip = reinterpret_cast<int32_t*>(ids->untyped_data());
  const int64_t chunks = ChunksFor(m, pool.num_threads());
  ParallelFor(pool, chunks, [=](int64_t c) {
    for (int64_t r = m * c / chunks, e = m * (c + 1) / chunks; r < e; ++r) {
      const float* row = lp + r * n;
      __m512 best = _mm512_set1_ps(-INFINITY);
      __m512i where = _mm512_setzero_si512();
      __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
      const __m512i step = _mm512_set1_epi32(16);
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {  // Strictly greater: each lane keeps its first maximum.
        const __m512 v = _mm512_loadu_ps(row + i);
        const __mmask16 gt = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
        best = _mm512_mask_mov_ps(best, gt, v);
        where = _mm512_mask_mov_epi32(where, gt, index);
        index = _mm512_add_epi32(index, step);
      }
      alignas(64) float values[16];
      alignas(64) int32_t at[16];
      _mm512_store_ps(values, best);
      _mm512_store_si512(at, where);
      float top = values[0];
      int32_t arg = at[0];
      for (int l = 1; l < 16; ++l)
        if (values[l] > top || (values[l] == top && at[l] < arg)) top = values[l], arg = at[l];
      for (; i < n; ++i)
        if (row[i] > top) top = row[i], arg = static_cast<int32_t>(i);
      if (!(top > -INFINITY)) arg = 0;  // All -inf (or NaN): index 0, as argmax of equal values.
      ip[r] = arg;
    }
  });
  return ffi::Error::Success();
}

// x [d] rotated by RoPE (rotate-half convention) and scaled:
// bf16(scale * (x cos + rot(x) sin)).
inline void RopeToBf16(const float* x, const float* cos, const float* sin, float scale,
                       int64_t d, uint16_t* out) {
  const int64_t half = d / 2;
  if (half % 16 == 0) {  // 16 lanes at a time; vcvtneps2bf16 rounds to nearest even.
    const __m512 sv = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < d; i += 16) {
      const __m512 rotated = i < half ? _mm512_sub_ps(_mm512_setzero_ps(),
                                                      _mm512_loadu_ps(x + i + half))
                                      : _mm512_loadu_ps(x + i - half);
      const __m512 v = _mm512_mul_ps(
          _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(cos + i)),
                        _mm512_mul_ps(rotated, _mm512_loadu_ps(sin + i))), sv);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(v));
    }
    return;
  }
  for (int64_t i = 0; i < d; ++i) {
    const float rotated = i < half ? -x[i + half] : x[i - half];
    out[i] = FloatToBf16((x[i] * cos[i] + rotated * sin[i]) * scale);
  }
}

// bf16(x [d]), d a multiple of 16, rounded to nearest even.
inline void ToBf16(const float* x, int64_t d, uint16_t* out) {
  for (int64_t i = 0; i < d; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
}

// A decode step's attention for one new token per row, fused with its cache write:
//   qkv [b, (heads + 2 kv) d] f32: the q, k and v projections (before RoPE), side by side;
//   cos/sin [b, d]: each row's RoPE tables; keys/values [b, kv, slots, d] bf16, updated in
//   place (aliased to outputs 1 and 2); valid [b, slots] bool (the new slot included);
//   index: int32 scalar, the slot written. Reads slots [0, index].
// out [b, kv, groups, d] f32: attention of bf16(scale * rope(q)) over the cache.
ffi::Error AttendImpl(ffi::ThreadPool pool, ffi::AnyBuffer qkv, ffi::AnyBuffer cos,
                      ffi::AnyBuffer sin, ffi::AnyBuffer keys, ffi::AnyBuffer values,
                      ffi::AnyBuffer valid, ffi::AnyBuffer index, ffi::Result<ffi::AnyBuffer> out,
                      ffi::Result<ffi::AnyBuffer> keys_out, ffi::Result<ffi::AnyBuffer> values_out,
                      float scale) {
  const auto od = out->dimensions(), kd = keys.dimensions();
  if (od.size() != 4 || kd.size() != 4 || kd[0] != od[0] || kd[1] != od[1] || kd[3] != od[3])
    return ffi::Error::InvalidArgument(
        "cdc_decode_attention: out [b, kv, g, d], keys [b, kv, s, d]");
  const int64_t batch = od[0], kv = od[1], groups = od[2], d = od[3], cache = kd[2];
  const int64_t heads = kv * groups, stride = (heads + 2 * kv) * d;
  if (groups > kMaxGroups || d % 16 || d > kMaxHeadDim)
    return ffi::Error::InvalidArgument("cdc_decode_attention: groups <= 16, head_dim % 16 == 0");
  if (qkv.element_count() != static_cast<size_t>(batch * stride) ||
      cos.element_count() != static_cast<size_t>(batch * d))
    return ffi::Error::InvalidArgument("cdc_decode_attention: qkv or cos has the wrong size");
  const int64_t slot = *reinterpret_cast<const int32_t*>(index.untyped_data());
  if (slot < 0 || slot >= cache)
    return ffi::Error::InvalidArgument("cdc_decode_attention: index outside the cache");
  const auto* xp = reinterpret_cast<const float*>(qkv.untyped_data());
  const auto* cp = reinterpret_cast<const float*>(cos.untyped_data());
  const auto* sp = reinterpret_cast<const float*>(sin.untyped_data());
  auto* kp = reinterpret_cast<uint16_t*>(keys_out->untyped_data());
  auto* vp = reinterpret_cast<uint16_t*>(values_out->untyped_data());
  // XLA aliases the caches to the outputs (input_output_aliases) unless it must keep the
  // inputs alive; then it hands over fresh buffers, which start as copies.
  if (kp != keys.untyped_data()) std::memcpy(kp, keys.untyped_data(), keys.size_bytes());
  if (vp != values.untyped_data()) std::memcpy(vp, values.untyped_data(), values.size_bytes());
  const auto* mp = reinterpret_cast<const bool*>(valid.untyped_data());
  auto* op = reinterpret_cast<float*>(out->untyped_data());
  const int64_t items = batch * kv, chunks = ChunksFor(items, pool.num_threads());
  ParallelFor(pool, chunks, [=](int64_t c) {
    // Scratch kept per thread: a decode step makes one call per layer.
    thread_local std::vector<float> scores, probs;
    scores.resize(groups * (slot + 1));
    probs.resize(groups * (slot + 1));
    uint16_t qb[kMaxGroups * kMaxHeadDim];
    for (int64_t i = items * c / chunks, e = items * (c + 1) / chunks; i < e; ++i) {
      const int64_t b = i / kv, h = i % kv;
      const float* row = xp + b * stride;
      uint16_t* ki = kp + i * cache * d;
      uint16_t* vi = vp + i * cache * d;
      RopeToBf16(row + (heads + h) * d, cp + b * d, sp + b * d, 1.0f, d, ki + slot * d);
      ToBf16(row + (heads + kv + h) * d, d, vi + slot * d);
      for (int64_t g = 0; g < groups; ++g)
        RopeToBf16(row + (h * groups + g) * d, cp + b * d, sp + b * d, scale, d, qb + g * d);
      AttendOne(qb, ki, vi, mp + b * cache, slot + 1, groups, d, op + i * groups * d,
                scores.data(), probs.data());
    }
  });
  return ffi::Error::Success();
}

// Whether this process may use AMX tiles (Linux >= 5.16 grants them on request).
extern "C" bool CdcAmxPermitted() { return kAmxPermitted; }

// Both matmuls: (x, packed weight) -> out.
auto MatmulBinding() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(CdcAmxMatmul, MatmulImpl<false>, MatmulBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CdcAmxGatedMatmul, MatmulImpl<true>, MatmulBinding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CdcArgmax, ArgmaxImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(CdcDecodeAttention, AttendImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // qkv
                                  .Arg<ffi::AnyBuffer>()  // cos
                                  .Arg<ffi::AnyBuffer>()  // sin
                                  .Arg<ffi::AnyBuffer>()  // keys
                                  .Arg<ffi::AnyBuffer>()  // values
                                  .Arg<ffi::AnyBuffer>()  // valid
                                  .Arg<ffi::AnyBuffer>()  // index
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Ret<ffi::AnyBuffer>()  // keys (in place)
                                  .Ret<ffi::AnyBuffer>()  // values (in place)
                                  .Attr<float>("scale"));
