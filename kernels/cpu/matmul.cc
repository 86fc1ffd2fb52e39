// MatMul (nn.Linear) through OpenBLAS. bf16/fp16 and quantized (fp8-block,
// awq-int4) weights are widened / dequantized per call, a panel of weight rows
// at a time, into thread-local scratch: no fp32 copy of the weights is kept
// (measured in docs/kernels.md).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/dtype_convert.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {
namespace {

// Rows of w widened per panel: about 2 MiB of fp32, at least 16 rows.
int64_t PanelRows(int64_t k) { return std::max<int64_t>(16, (int64_t{1} << 19) / std::max<int64_t>(k, 1)); }

}  // namespace

namespace {

// Columns [n0, n0 + nb) of an awq-int4 `w` dequantized to float32 as
// dst [K, nb] (n0, nb multiples of 8): the values DequantizeRows gives,
// transposed.
void DequantizeAwqColumns(const LinearWeight& w, int64_t n0, int64_t nb, float* dst) {
  constexpr int kShift[8] = {0, 16, 4, 20, 8, 24, 12, 28};
  const int64_t k = w.in_features(), n = w.out_features(), words = n / 8, g = w.group_size;
  const int32_t* qweight = w.weight.data_as<int32_t>();
  const int32_t* qzeros = w.zero_points.data_as<int32_t>();
  const int64_t j0 = n0 / 8, nw = nb / 8;
  std::vector<float> scale(static_cast<size_t>(nb));
  std::vector<int> zero(static_cast<size_t>(nb));
  for (int64_t c = 0; c < k; ++c) {
    if (c % g == 0) {
      const int64_t group = c / g;
      for (int64_t i = 0; i < nb; ++i) {
        scale[static_cast<size_t>(i)] =
            LoadF32(w.scales.data(), w.scales.dtype, group * n + n0 + i);
        const uint32_t z = static_cast<uint32_t>(qzeros[group * words + j0 + i / 8]);
        zero[static_cast<size_t>(i)] = static_cast<int>((z >> kShift[i % 8]) & 15u);
      }
    }
    const int32_t* qrow = qweight + c * words + j0;
    float* out = dst + c * nb;
    for (int64_t jw = 0; jw < nw; ++jw) {
      const uint32_t q = static_cast<uint32_t>(qrow[jw]);
      for (int i = 0; i < 8; ++i) {
        const size_t col = static_cast<size_t>(8 * jw + i);
        out[col] =
            static_cast<float>(static_cast<int>((q >> kShift[i]) & 15u) - zero[col]) * scale[col];
      }
    }
  }
}

}  // namespace

void DequantizeRows(const LinearWeight& w, int64_t n0, int64_t nb, float* dst) {
  const int64_t k = w.in_features();
  switch (w.format) {
    case WeightFormat::kUnquantized: {
      const size_t elem = DataTypeSize(w.weight.dtype);
      const char* src =
          static_cast<const char*>(w.weight.data()) + static_cast<size_t>(n0 * k) * elem;
      WidenToF32(src, w.weight.dtype, nb * k, dst);
      return;
    }
    case WeightFormat::kFp8Block: {
      static const std::array<float, 256> kFp8 = [] {
        std::array<float, 256> t{};
        for (int b = 0; b < 256; ++b)
          t[static_cast<size_t>(b)] = Fp8E4M3ToFp32(static_cast<uint8_t>(b));
        return t;
      }();
      const int64_t bn = w.block_shape[0], bk = w.block_shape[1];
      const int64_t scale_cols = (k + bk - 1) / bk;
      const uint8_t* q = w.weight.data_as<uint8_t>();
      const float* scales = w.scales.data_as<float>();
      for (int64_t r = 0; r < nb; ++r) {
        const uint8_t* row = q + (n0 + r) * k;
        const float* srow = scales + ((n0 + r) / bn) * scale_cols;
        float* out = dst + r * k;
        for (int64_t c0 = 0; c0 < k; c0 += bk) {
          const float s = srow[c0 / bk];
          const int64_t c1 = std::min(k, c0 + bk);
          for (int64_t c = c0; c < c1; ++c) out[c] = kFp8[row[c]] * s;
        }
      }
      return;
    }
    case WeightFormat::kAwqInt4: {
      // Output feature 8j + i sits at nibble kOrder[i] of word j.
      static constexpr int kOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};
      const int64_t n = w.out_features(), words = n / 8, g = w.group_size;
      const int32_t* qweight = w.weight.data_as<int32_t>();
      const int32_t* qzeros = w.zero_points.data_as<int32_t>();
      const int64_t j0 = n0 / 8, j1 = (n0 + nb) / 8;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t group = c / g;
        const int32_t* qrow = qweight + c * words;
        const int32_t* zrow = qzeros + group * words;
        for (int64_t j = j0; j < j1; ++j) {
          const uint32_t qw = static_cast<uint32_t>(qrow[j]), zw = static_cast<uint32_t>(zrow[j]);
          for (int i = 0; i < 8; ++i) {
            const int shift = 4 * kOrder[i];
            const int v =
                static_cast<int>((qw >> shift) & 15u) - static_cast<int>((zw >> shift) & 15u);
            const int64_t col = 8 * j + i;
            const float s = LoadF32(w.scales.data(), w.scales.dtype, group * n + col);
            dst[(col - n0) * k + c] = static_cast<float>(v) * s;
          }
        }
      }
      return;
    }
  }
}

namespace {

// Output words per tile of the awq-int4 GEMV: 16 int32 (one cache line of a
// qweight row) = 128 outputs.
constexpr int64_t kAwqTileWords = 16;

// Tile [j0, j1) of the awq-int4 GEMV: y[t, 8j .. 8j + 7] += for t < rows.
// xsum[t * groups + g] = the sum of x[t] over group g. Portable version.
void AwqGemvTile(const float* x, int64_t rows, int64_t k, const int32_t* qweight,
                 const int32_t* qzeros, const void* scales, DataType scales_type, int64_t words,
                 int64_t g, const float* xsum, int64_t j0, int64_t j1, float* y, int64_t ldy) {
  constexpr int kShift[8] = {0, 16, 4, 20, 8, 24, 12, 28};  // 4 x {0, 4, 1, 5, 2, 6, 3, 7}
  const int64_t n = words * 8, groups = k / g;
  for (int64_t j = j0; j < j1; ++j) {
    float acc[kQuantizedGemvRows][8] = {};
    for (int64_t gi = 0; gi < groups; ++gi) {
      float part[kQuantizedGemvRows][8] = {};
      for (int64_t c = gi * g; c < (gi + 1) * g; ++c) {
        const uint32_t q = static_cast<uint32_t>(qweight[c * words + j]);
        for (int i = 0; i < 8; ++i) {
          const float f = static_cast<float>((q >> kShift[i]) & 15u);
          for (int64_t t = 0; t < rows; ++t) part[t][i] += x[t * k + c] * f;
        }
      }
      const uint32_t z = static_cast<uint32_t>(qzeros[gi * words + j]);
      for (int i = 0; i < 8; ++i) {
        const float sc = LoadF32(scales, scales_type, gi * n + 8 * j + i);
        const float zf = static_cast<float>((z >> kShift[i]) & 15u);
        for (int64_t t = 0; t < rows; ++t) {
          acc[t][i] += sc * (part[t][i] - zf * xsum[t * groups + gi]);
        }
      }
    }
    for (int64_t t = 0; t < rows; ++t) {
      for (int i = 0; i < 8; ++i) y[t * ldy + 8 * j + i] += acc[t][i];
    }
  }
}

#if defined(__x86_64__)
// The same with AVX2 + FMA: a word's 8 nibbles are one vector (variable
// shifts), one FMA per row, kWords adjacent words at a time (independent FMA
// chains). Group by group, all words of the tile: the group's qweight lines
// (g rows of one cache line) stay in L1 while the tile's words are done;
// acc[t][8 (j - j0) .. + 8] collects the groups' terms.
template <int kRows, int kWords>
__attribute__((target("avx2,fma"))) void AwqGroupWordsAvx2(
    const float* x, int64_t k, const int32_t* qweight, const int32_t* qzeros, const float* sc,
    int64_t words, int64_t g, int64_t gi, const float* xsum, int64_t groups, int64_t j, int64_t j0,
    float (*acc)[kAwqTileWords * 8]) {
  const __m256i shifts = _mm256_setr_epi32(0, 16, 4, 20, 8, 24, 12, 28);
  const __m256i mask = _mm256_set1_epi32(15);
  __m256 part[kRows][kWords];
  for (int t = 0; t < kRows; ++t) {
    for (int u = 0; u < kWords; ++u) part[t][u] = _mm256_setzero_ps();
  }
  const int32_t* q = qweight + gi * g * words + j;
  for (int64_t c = gi * g; c < (gi + 1) * g; ++c, q += words) {
    __m256 xv[kRows];
    for (int t = 0; t < kRows; ++t) xv[t] = _mm256_set1_ps(x[t * k + c]);
    for (int u = 0; u < kWords; ++u) {
      const __m256 v = _mm256_cvtepi32_ps(
          _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(q[u]), shifts), mask));
      for (int t = 0; t < kRows; ++t) part[t][u] = _mm256_fmadd_ps(xv[t], v, part[t][u]);
    }
  }
  for (int u = 0; u < kWords; ++u) {
    const __m256 zf = _mm256_cvtepi32_ps(_mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(qzeros[gi * words + j + u]), shifts), mask));
    const __m256 s = _mm256_loadu_ps(sc + 8 * (j - j0 + u));
    for (int t = 0; t < kRows; ++t) {
      const __m256 centred =
          _mm256_fnmadd_ps(zf, _mm256_set1_ps(xsum[t * groups + gi]), part[t][u]);
      float* a = acc[t] + 8 * (j - j0 + u);
      _mm256_storeu_ps(a, _mm256_fmadd_ps(s, centred, _mm256_loadu_ps(a)));
    }
  }
}

// The tile driver of the vector GEMVs: per group, the tile's scales as
// floats, then `kStep` words at a time through `step(gi, j, sc, acc)` and the
// rest one by one through the AVX2 kernel; acc is added to y at the end.
template <int kRows, int kStep, typename Step>
void AwqGemvTileVector(const float* x, int64_t k, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, DataType scales_type, int64_t words, int64_t g,
                       const float* xsum, int64_t j0, int64_t j1, float* y, int64_t ldy,
                       Step step) {
  const int64_t n = words * 8, groups = k / g, width = 8 * (j1 - j0);
  float acc[kRows][kAwqTileWords * 8] = {};
  float sc[kAwqTileWords * 8];
  for (int64_t gi = 0; gi < groups; ++gi) {
    for (int64_t i = 0; i < width; ++i) sc[i] = LoadF32(scales, scales_type, gi * n + 8 * j0 + i);
    int64_t j = j0;
    for (; j + kStep <= j1; j += kStep) step(gi, j, sc, acc);
    for (; j < j1; ++j) {
      AwqGroupWordsAvx2<kRows, 1>(x, k, qweight, qzeros, sc, words, g, gi, xsum, groups, j, j0,
                                  acc);
    }
  }
  for (int t = 0; t < kRows; ++t) {
    float* out = y + t * ldy + 8 * j0;
    for (int64_t i = 0; i < width; ++i) out[i] += acc[t][i];
  }
}

template <int kRows>
void AwqGemvTileAvx2(const float* x, int64_t k, const int32_t* qweight, const int32_t* qzeros,
                     const void* scales, DataType scales_type, int64_t words, int64_t g,
                     const float* xsum, int64_t j0, int64_t j1, float* y, int64_t ldy) {
  // Accumulators: kRows x kWords <= 8 registers (16 ymm in all).
  constexpr int kWords = kRows <= 2 ? 4 : 2;
  const int64_t groups = k / g;
  AwqGemvTileVector<kRows, kWords>(
      x, k, qweight, qzeros, scales, scales_type, words, g, xsum, j0, j1, y, ldy,
      [&](int64_t gi, int64_t j, const float* sc, float(*acc)[kAwqTileWords * 8]) {
        AwqGroupWordsAvx2<kRows, kWords>(x, k, qweight, qzeros, sc, words, g, gi, xsum, groups, j,
                                         j0, acc);
      });
}

// GCC 12's AVX-512 headers trip its own (un)initialized-use warnings
// (_mm512_undefined_* inside the intrinsics).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The 16 nibbles of words p[0], p[1] as floats, output order (lanes 0-7:
// p[0]'s outputs 0..7, lanes 8-15: p[1]'s).
__attribute__((target("avx512f"))) inline __m512 UnpackPairAvx512(const int32_t* p, __m512i spread,
                                                                  __m512i shifts, __m512i mask) {
  int64_t two;
  std::memcpy(&two, p, sizeof two);
  const __m512i both = _mm512_permutexvar_epi32(spread, _mm512_set1_epi64(two));
  return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(both, shifts), mask));
}

// AVX-512: two adjacent words per vector (16 outputs), kPairs pairs at a time.
template <int kRows, int kPairs>
__attribute__((target("avx512f"))) void AwqGroupPairsAvx512(
    const float* x, int64_t k, const int32_t* qweight, const int32_t* qzeros, const float* sc,
    int64_t words, int64_t g, int64_t gi, const float* xsum, int64_t groups, int64_t j, int64_t j0,
    float (*acc)[kAwqTileWords * 8]) {
  const __m512i shifts =
      _mm512_setr_epi32(0, 16, 4, 20, 8, 24, 12, 28, 0, 16, 4, 20, 8, 24, 12, 28);
  const __m512i mask = _mm512_set1_epi32(15);
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 part[kRows][kPairs];
  for (int t = 0; t < kRows; ++t) {
    for (int u = 0; u < kPairs; ++u) part[t][u] = _mm512_setzero_ps();
  }
  const int32_t* q = qweight + gi * g * words + j;
  for (int64_t c = gi * g; c < (gi + 1) * g; ++c, q += words) {
    __m512 xv[kRows];
    for (int t = 0; t < kRows; ++t) xv[t] = _mm512_set1_ps(x[t * k + c]);
    for (int u = 0; u < kPairs; ++u) {
      const __m512 v = UnpackPairAvx512(q + 2 * u, spread, shifts, mask);
      for (int t = 0; t < kRows; ++t) part[t][u] = _mm512_fmadd_ps(xv[t], v, part[t][u]);
    }
  }
  for (int u = 0; u < kPairs; ++u) {
    const __m512 zf = UnpackPairAvx512(qzeros + gi * words + j + 2 * u, spread, shifts, mask);
    const __m512 s = _mm512_loadu_ps(sc + 8 * (j - j0 + 2 * u));
    for (int t = 0; t < kRows; ++t) {
      const __m512 centred =
          _mm512_fnmadd_ps(zf, _mm512_set1_ps(xsum[t * groups + gi]), part[t][u]);
      float* a = acc[t] + 8 * (j - j0 + 2 * u);
      _mm512_storeu_ps(a, _mm512_fmadd_ps(s, centred, _mm512_loadu_ps(a)));
    }
  }
}

template <int kRows>
void AwqGemvTileAvx512(const float* x, int64_t k, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, DataType scales_type, int64_t words, int64_t g,
                       const float* xsum, int64_t j0, int64_t j1, float* y, int64_t ldy) {
  constexpr int kPairs = kRows <= 2 ? 4 : 2;
  const int64_t groups = k / g;
  AwqGemvTileVector<kRows, 2 * kPairs>(
      x, k, qweight, qzeros, scales, scales_type, words, g, xsum, j0, j1, y, ldy,
      [&](int64_t gi, int64_t j, const float* sc, float(*acc)[kAwqTileWords * 8]) {
        AwqGroupPairsAvx512<kRows, kPairs>(x, k, qweight, qzeros, sc, words, g, gi, xsum, groups, j,
                                           j0, acc);
      });
}

#pragma GCC diagnostic pop

bool HasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// Calls f(std::integral_constant<int, rows>) for rows in 1..4.
template <typename F>
void WithRows(int64_t rows, F&& f) {
  switch (rows) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    default:
      return f(std::integral_constant<int, 4>{});
  }
}

// y[t] (+)= x[t] · w^T for an awq-int4 w and rows <= kQuantizedGemvRows; y
// already holds the bias or zeros.
void AwqGemv(const float* x, int64_t rows, const LinearWeight& w, float* y, int64_t ldy,
             int num_threads) {
  const int64_t k = w.in_features(), words = w.weight.shape[1], g = w.group_size;
  const int64_t groups = k / g;
  std::vector<float> xsum(static_cast<size_t>(rows * groups), 0.0f);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t c = 0; c < k; ++c) xsum[static_cast<size_t>(t * groups + c / g)] += x[t * k + c];
  }
  const int64_t tiles = (words + kAwqTileWords - 1) / kAwqTileWords;
  const int32_t* qweight = w.weight.data_as<int32_t>();
  const int32_t* qzeros = w.zero_points.data_as<int32_t>();
#pragma omp parallel for num_threads(num_threads) schedule(static) if (tiles > 1)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t j0 = tile * kAwqTileWords, j1 = std::min(words, j0 + kAwqTileWords);
#if defined(__x86_64__)
    if (HasAvx512() && HasAvx2Fma()) {
      auto run = [&](auto rows_tag) {
        AwqGemvTileAvx512<decltype(rows_tag)::value>(x, k, qweight, qzeros, w.scales.data(),
                                                     w.scales.dtype, words, g, xsum.data(), j0, j1,
                                                     y, ldy);
      };
      WithRows(rows, run);
      continue;
    }
    if (HasAvx2Fma()) {
      auto run = [&](auto rows_tag) {
        AwqGemvTileAvx2<decltype(rows_tag)::value>(x, k, qweight, qzeros, w.scales.data(),
                                                   w.scales.dtype, words, g, xsum.data(), j0, j1, y,
                                                   ldy);
      };
      WithRows(rows, run);
      continue;
    }
#endif
    AwqGemvTile(x, rows, k, qweight, qzeros, w.scales.data(), w.scales.dtype, words, g, xsum.data(),
                j0, j1, y, ldy);
  }
}

}  // namespace

void LinearF32(const float* x, int64_t rows, const LinearWeight& w, const void* bias,
               DataType bias_type, float* y, int64_t ldy, int num_threads) {
  const int64_t n = w.out_features(), k = w.in_features();
  if (rows == 0 || n == 0) return;
  auto fill_bias = [&](int64_t n0, int64_t nb) {
    if (bias == nullptr) return 0.0f;
    for (int64_t t = 0; t < rows; ++t) {
      float* yr = y + t * ldy + n0;
      for (int64_t j = 0; j < nb; ++j) yr[j] = LoadF32(bias, bias_type, n0 + j);
    }
    return 1.0f;  // beta: accumulate onto the bias
  };
  if (k == 0) {
    for (int64_t t = 0; t < rows; ++t) std::fill(y + t * ldy, y + t * ldy + n, 0.0f);
    fill_bias(0, n);
    return;
  }
  if (w.format == WeightFormat::kAwqInt4 && rows <= kQuantizedGemvRows) {
    fill_bias(0, n);
    if (bias == nullptr) {
      for (int64_t t = 0; t < rows; ++t) std::fill(y + t * ldy, y + t * ldy + n, 0.0f);
    }
    AwqGemv(x, rows, w, y, ldy, num_threads);
    return;
  }
  if (w.format == WeightFormat::kUnquantized && w.weight.dtype == DataType::kFloat32) {
    const float beta = fill_bias(0, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(n), static_cast<int>(k), 1.0f, x, static_cast<int>(k),
                w.weight.data_as<float>(), static_cast<int>(k), beta, y, static_cast<int>(ldy));
    return;
  }
  int64_t panel = std::min(n, PanelRows(k));
  if (w.format == WeightFormat::kAwqInt4) panel = std::max<int64_t>(8, panel / 8 * 8);
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(panel * k));
  for (int64_t n0 = 0; n0 < n; n0 += panel) {
    const int64_t nb = std::min(panel, n - n0);
    float* dst = scratch.data();
    // Dequantized on the calling thread: an OpenMP region between two
    // OpenBLAS calls makes the two thread pools spin against each other (10x
    // slower on 2 cores, measured).
    const float beta = fill_bias(n0, nb);
    if (w.format == WeightFormat::kAwqInt4) {
      // qweight is K-major: the panel dequantized as [K, nb] (rows of qweight
      // read and written in order), multiplied untransposed.
      DequantizeAwqColumns(w, n0, nb, dst);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                  static_cast<int>(nb), static_cast<int>(k), 1.0f, x, static_cast<int>(k), dst,
                  static_cast<int>(nb), beta, y + n0, static_cast<int>(ldy));
      continue;
    }
    DequantizeRows(w, n0, nb, dst);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(nb), static_cast<int>(k), 1.0f, x, static_cast<int>(k), dst,
                static_cast<int>(k), beta, y + n0, static_cast<int>(ldy));
  }
}

bool CpuBackend::Supports(LinearOp /*op*/, WeightFormat format) const {
  switch (format) {
    case WeightFormat::kUnquantized:
    case WeightFormat::kFp8Block:
    case WeightFormat::kAwqInt4:
      return true;
  }
  return false;
}

absl::Status CpuBackend::MatMulImpl(const Tensor& x, const LinearWeight& linear, const Tensor& bias,
                                    Tensor* y) {
  LinearF32(x.data_as<float>(), x.shape[0], linear, bias.defined() ? bias.data() : nullptr,
            bias.dtype, y->mutable_data_as<float>(), linear.out_features(), num_threads_);
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
