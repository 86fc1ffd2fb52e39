// The op boundary: every precondition on shapes, dtypes and storage is
// checked here once, for every backend, before the backend's *Impl runs.
#include "kernels/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dtype_convert.h"
#include "common/status.h"

namespace epserve::kernels {
namespace {

constexpr int64_t kAny = -1;

std::string PatternString(std::initializer_list<int64_t> dims) {
  return absl::StrCat("[",
                      absl::StrJoin(dims, ", ",
                                    [](std::string* s, int64_t d) {
                                      absl::StrAppend(s, d == kAny ? "*" : absl::StrCat(d));
                                    }),
                      "]");
}

absl::Status Bad(const char* op, const char* arg, const std::string& expected,
                 const std::string& found) {
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", arg, ": expected ", expected, ", found ", found));
}

// The tensor is defined, on `device`, fits its storage and (if `writable`)
// is not read-only.
absl::Status CheckStorage(const char* op, const char* arg, const Tensor& t,
                          const DeviceSpec& device, bool writable) {
  if (!t.defined()) return Bad(op, arg, "a tensor", "an undefined tensor");
  for (int64_t d : t.shape) {
    if (d < 0) return Bad(op, arg, "non-negative dimensions", ShapeString(t.shape));
  }
  if (t.storage->device().type != device.type ||
      t.storage->device().ordinal != device.ordinal) {
    return Bad(op, arg, absl::StrCat("a tensor on ", device.ToString()),
               absl::StrCat("one on ", t.storage->device().ToString()));
  }
  if (t.byte_offset + t.nbytes() > t.storage->size_bytes()) {
    return Bad(op, arg, "a view inside its storage",
               absl::StrCat(t.nbytes(), " bytes at offset ", t.byte_offset, " of ",
                            t.storage->size_bytes()));
  }
  if (writable && t.storage->read_only()) {
    return Bad(op, arg, "a writable tensor", "read-only storage");
  }
  return absl::OkStatus();
}

absl::Status CheckDtype(const char* op, const char* arg, const Tensor& t,
                        std::initializer_list<DataType> allowed) {
  for (DataType d : allowed) {
    if (t.dtype == d) return absl::OkStatus();
  }
  std::string names = absl::StrJoin(allowed, " or ", [](std::string* s, DataType d) {
    absl::StrAppend(s, DataTypeName(d));
  });
  return Bad(op, arg, absl::StrCat("dtype ", names), DataTypeName(t.dtype));
}

// Shape matches `dims` (kAny = any size).
absl::Status CheckShape(const char* op, const char* arg, const Tensor& t,
                        std::initializer_list<int64_t> dims) {
  bool ok = t.shape.size() == dims.size();
  size_t i = 0;
  for (int64_t d : dims) {
    if (!ok) break;
    if (d != kAny && t.shape[i] != d) ok = false;
    ++i;
  }
  if (ok) return absl::OkStatus();
  return Bad(op, arg, absl::StrCat("shape ", PatternString(dims)), ShapeString(t.shape));
}

// Storage + dtype + shape in one call.
absl::Status Check(const char* op, const char* arg, const Tensor& t, const DeviceSpec& dev,
                   bool writable, std::initializer_list<DataType> dtypes,
                   std::initializer_list<int64_t> dims) {
  RETURN_IF_ERROR(CheckStorage(op, arg, t, dev, writable));
  RETURN_IF_ERROR(CheckDtype(op, arg, t, dtypes));
  return CheckShape(op, arg, t, dims);
}

absl::Status CheckOutPtr(const char* op, const char* arg, const void* p) {
  if (p == nullptr) return Bad(op, arg, "a tensor", "nullptr");
  return absl::OkStatus();
}

constexpr std::initializer_list<DataType> kF32 = {DataType::kFloat32};
constexpr std::initializer_list<DataType> kI32 = {DataType::kInt32};
constexpr std::initializer_list<DataType> kWeight = {DataType::kFloat32, DataType::kBFloat16,
                                                     DataType::kFloat16};

double YarnMscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

}  // namespace

absl::StatusOr<RopeFrequencies> ComputeRopeFrequencies(const RopeConfig& c, int64_t head_dim) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: ", what));
  };
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return bad(absl::StrCat("head_dim: expected a positive even number, found ", head_dim));
  }
  if (!(c.theta > 1.0)) return bad(absl::StrCat("theta: expected > 1, found ", c.theta));
  if (c.type != RopeType::kDefault && !(c.factor > 0.0)) {
    return bad(absl::StrCat("factor: expected > 0, found ", c.factor));
  }
  const int64_t half = head_dim / 2;
  RopeFrequencies out;
  out.inv_freq.resize(half);
  // transformers: inv_freq = 1 / theta^(2i/dim) in float32. pow in double
  // rounded once to float reproduces torch's float32 result.
  std::vector<double> base(half);
  for (int64_t i = 0; i < half; ++i) {
    base[i] = 1.0 / std::pow(c.theta, static_cast<double>(2 * i) / head_dim);
  }
  switch (c.type) {
    case RopeType::kDefault:
      break;
    case RopeType::kLinear:
      for (double& f : base) f /= c.factor;
      break;
    case RopeType::kLlama3: {
      if (c.original_max_position_embeddings <= 0) {
        return bad("original_max_position_embeddings: expected > 0 for llama3");
      }
      if (!(c.high_freq_factor > c.low_freq_factor)) {
        return bad("high_freq_factor: expected > low_freq_factor for llama3");
      }
      const double old_ctx = static_cast<double>(c.original_max_position_embeddings);
      const double low_wavelen = old_ctx / c.low_freq_factor;
      const double high_wavelen = old_ctx / c.high_freq_factor;
      for (double& f : base) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen > low_wavelen) {
          f = f / c.factor;  // low frequency: interpolate fully
        } else if (wavelen >= high_wavelen) {
          // medium: blend between scaled and unscaled
          const double smooth =
              (old_ctx / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
          f = (1.0 - smooth) * f / c.factor + smooth * f;
        }  // high frequency: unchanged
      }
      break;
    }
    case RopeType::kYarn: {
      if (c.original_max_position_embeddings <= 0) {
        return bad("original_max_position_embeddings: expected > 0 for yarn");
      }
      const double dim = static_cast<double>(head_dim);
      const double max_pos = static_cast<double>(c.original_max_position_embeddings);
      auto correction_dim = [&](double num_rotations) {
        return dim * std::log(max_pos / (num_rotations * 2.0 * M_PI)) /
               (2.0 * std::log(c.theta));
      };
      double low = correction_dim(c.beta_fast);
      double high = correction_dim(c.beta_slow);
      if (c.yarn_truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1.0);
      if (low == high) high += 0.001;  // transformers: prevent a singular ramp
      for (int64_t i = 0; i < half; ++i) {
        // The ramp is float32 in transformers; the blend is exact enough in double.
        double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrapolation_factor = 1.0 - ramp;
        const double extrapolated = base[i];
        const double interpolated = base[i] / c.factor;
        base[i] = interpolated * (1.0 - extrapolation_factor) +
                  extrapolated * extrapolation_factor;
      }
      if (c.attention_factor > 0.0) {
        out.attention_factor = static_cast<float>(c.attention_factor);
      } else if (c.mscale != 0.0 && c.mscale_all_dim != 0.0) {
        out.attention_factor = static_cast<float>(YarnMscale(c.factor, c.mscale) /
                                                  YarnMscale(c.factor, c.mscale_all_dim));
      } else {
        out.attention_factor = static_cast<float>(YarnMscale(c.factor, 1.0));
      }
      break;
    }
  }
  for (int64_t i = 0; i < half; ++i) out.inv_freq[i] = static_cast<float>(base[i]);
  return out;
}

// ---- memory ----

absl::Status Backend::CopyFromHost(const void* src, size_t bytes, Tensor* dst) {
  RETURN_IF_ERROR(CheckOutPtr("CopyFromHost", "dst", dst));
  RETURN_IF_ERROR(CheckStorage("CopyFromHost", "dst", *dst, device(), true));
  if (bytes != dst->nbytes()) {
    return Bad("CopyFromHost", "bytes", absl::StrCat(dst->nbytes()), absl::StrCat(bytes));
  }
  return CopyFromHostImpl(src, bytes, dst);
}

absl::Status Backend::CopyRows(const Tensor& src, const Tensor& blocks, Tensor* dst) {
  const char* op = "CopyRows";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "src", src, dev, false, kWeight, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "blocks", blocks, dev, false, kI32, {kAny, 3}));
  RETURN_IF_ERROR(CheckOutPtr(op, "dst", dst));
  RETURN_IF_ERROR(Check(op, "dst", *dst, dev, true, kWeight, {kAny, src.shape[1]}));
  if (blocks.shape[0] > 0 && src.nbytes() > 0 && dst->data() == src.data()) {
    return Bad(op, "dst", "a buffer distinct from src", "src");
  }
  if (blocks.shape[0] == 0 || src.shape[1] == 0) return absl::OkStatus();
  return CopyRowsImpl(src, blocks, dst);
}

absl::Status Backend::CopyToHost(const Tensor& src, void* dst, size_t bytes) {
  RETURN_IF_ERROR(CheckStorage("CopyToHost", "src", src, device(), false));
  if (bytes != src.nbytes()) {
    return Bad("CopyToHost", "bytes", absl::StrCat(src.nbytes()), absl::StrCat(bytes));
  }
  return CopyToHostImpl(src, dst, bytes);
}

// ---- linear weights ----

namespace {

// `w`'s format is one `backend` runs `linear_op` on. Checked before anything
// else about the weight: the other checks depend on the format.
absl::Status CheckFormat(const Backend& backend, LinearOp linear_op, const char* arg,
                         const LinearWeight& w) {
  if (backend.Supports(linear_op, w.format)) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(
      LinearOpName(linear_op), ": ", arg, ": weight format ", WeightFormatName(w.format),
      " is not supported by the ", backend.device().ToString(), " backend"));
}

// A defined LinearWeight's tensors against its format: N x K, `n` / `k` kAny
// for any size; `dtypes` the weight's allowed storage types. Errors name the
// weight as `arg`, its companions as `arg`.scales / `arg`.zero_points.
absl::Status CheckLinearWeight(const char* op, const char* arg, const LinearWeight& w,
                               const DeviceSpec& dev, std::initializer_list<DataType> dtypes,
                               int64_t n, int64_t k) {
  switch (w.format) {
    case WeightFormat::kUnquantized:
      RETURN_IF_ERROR(Check(op, arg, w.weight, dev, false, dtypes, {n, k}));
      if (w.scales.defined() || w.zero_points.defined() || w.group_size != 0 ||
          w.block_shape[0] != 0 || w.block_shape[1] != 0) {
        return Bad(op, arg, "an unquantized weight (no scales, zero points, group or block)",
                   "quantization fields set");
      }
      return absl::OkStatus();
    case WeightFormat::kFp8Block: {
      RETURN_IF_ERROR(Check(op, arg, w.weight, dev, false, {DataType::kFloat8E4M3}, {n, k}));
      const int64_t bn = w.block_shape[0], bk = w.block_shape[1];
      if (bn <= 0 || bk <= 0 || w.group_size != 0 || w.zero_points.defined()) {
        return Bad(op, arg, "fp8-block: a positive block shape, no group or zero points",
                   absl::StrCat("block ", bn, "x", bk, ", group ", w.group_size,
                                w.zero_points.defined() ? ", zero points" : ""));
      }
      const int64_t rows = w.weight.shape[0], cols = w.weight.shape[1];
      const std::string scales = absl::StrCat(arg, ".scales");
      return Check(op, scales.c_str(), w.scales, dev, false, {DataType::kFloat32},
                   {(rows + bn - 1) / bn, (cols + bk - 1) / bk});
    }
    case WeightFormat::kAwqInt4: {
      if (n != kAny && n % 8 != 0) {
        return Bad(op, arg, "awq-int4: N a multiple of 8", absl::StrCat("N=", n));
      }
      RETURN_IF_ERROR(
          Check(op, arg, w.weight, dev, false, {DataType::kInt32}, {k, n == kAny ? kAny : n / 8}));
      const int64_t g = w.group_size, kk = w.weight.shape[0], words = w.weight.shape[1];
      if (g <= 0 || kk % g != 0 || w.block_shape[0] != 0 || w.block_shape[1] != 0) {
        return Bad(op, arg, "awq-int4: a group size dividing K, no block shape",
                   absl::StrCat("group ", g, ", K=", kk));
      }
      const std::string zeros = absl::StrCat(arg, ".zero_points");
      const std::string scales = absl::StrCat(arg, ".scales");
      RETURN_IF_ERROR(
          Check(op, zeros.c_str(), w.zero_points, dev, false, {DataType::kInt32}, {kk / g, words}));
      return Check(op, scales.c_str(), w.scales, dev, false,
                   {DataType::kFloat16, DataType::kBFloat16, DataType::kFloat32},
                   {kk / g, words * 8});
    }
  }
  return Bad(op, arg, "a known weight format", absl::StrCat(static_cast<int>(w.format)));
}

}  // namespace

absl::StatusOr<LinearWeight> LinearWeightToDevice(Backend& backend, const LinearWeight& host) {
  LinearWeight out = host;
  for (Tensor* t : {&out.weight, &out.scales, &out.zero_points}) {
    if (t->defined()) {
      ASSIGN_OR_RETURN(*t, backend.ToDevice(*t));
    }
  }
  return out;
}

// ---- dense ----

namespace {

// MatMul's checks of one weight (named w_name, ...) against an x already
// checked as [T, K] float32.
absl::Status CheckLinear(const Backend& backend, LinearOp linear_op, const DeviceSpec& dev,
                         const Tensor& x, const char* w_name, const LinearWeight* w,
                         const char* bias_name, const Tensor* bias, const char* y_name,
                         const Tensor* y) {
  const char* op = LinearOpName(linear_op);
  const int64_t t = x.shape[0], k = x.shape[1];
  RETURN_IF_ERROR(CheckOutPtr(op, w_name, w));
  if (!w->defined()) return Bad(op, w_name, "a tensor", "an undefined tensor");
  RETURN_IF_ERROR(CheckFormat(backend, linear_op, w_name, *w));
  RETURN_IF_ERROR(CheckLinearWeight(op, w_name, *w, dev, kWeight, kAny, k));
  const int64_t n = w->out_features();
  if (bias != nullptr && bias->defined()) {
    RETURN_IF_ERROR(Check(op, bias_name, *bias, dev, false, kWeight, {n}));
  }
  RETURN_IF_ERROR(CheckOutPtr(op, y_name, y));
  RETURN_IF_ERROR(Check(op, y_name, *y, dev, true, kF32, {t, n}));
  if (t > 0 && y->data() == x.data()) return Bad(op, y_name, "a buffer distinct from x", "x");
  return absl::OkStatus();
}

}  // namespace

absl::Status Backend::MatMul(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                             Tensor* y) {
  const char* op = "MatMul";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "x", x, dev, false, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(CheckLinear(*this, LinearOp::kMatMul, dev, x, "w", &w, "bias", &bias, "y", y));
  return MatMulImpl(x, w, bias, y);
}

absl::Status Backend::MatMulShared(const Tensor& x, absl::Span<const LinearWeight* const> ws,
                                   absl::Span<const Tensor* const> biases,
                                   absl::Span<Tensor* const> ys) {
  const char* op = "MatMulShared";
  const DeviceSpec dev = device();
  if (ws.size() > 4) return Bad(op, "ws", "at most 4 weights", absl::StrCat(ws.size()));
  if (biases.size() != ws.size() || ys.size() != ws.size()) {
    return Bad(op, "biases, ys", absl::StrCat(ws.size(), " each (one per weight)"),
               absl::StrCat(biases.size(), " and ", ys.size()));
  }
  RETURN_IF_ERROR(Check(op, "x", x, dev, false, kF32, {kAny, kAny}));
  for (size_t i = 0; i < ws.size(); ++i) {
    const std::string w_name = absl::StrCat("ws[", i, "]");
    const std::string b_name = absl::StrCat("biases[", i, "]");
    const std::string y_name = absl::StrCat("ys[", i, "]");
    RETURN_IF_ERROR(CheckLinear(*this, LinearOp::kMatMulShared, dev, x, w_name.c_str(), ws[i],
                                b_name.c_str(), biases[i], y_name.c_str(), ys[i]));
  }
  return MatMulSharedImpl(x, ws, biases, ys);
}

absl::Status Backend::MatMulSharedImpl(const Tensor& x, absl::Span<const LinearWeight* const> ws,
                                       absl::Span<const Tensor* const> biases,
                                       absl::Span<Tensor* const> ys) {
  for (size_t i = 0; i < ws.size(); ++i) {
    RETURN_IF_ERROR(MatMulImpl(x, *ws[i], biases[i] != nullptr ? *biases[i] : Tensor(), ys[i]));
  }
  return absl::OkStatus();
}

absl::Status Backend::Embedding(const Tensor& ids, const Tensor& table, Tensor* out) {
  const char* op = "Embedding";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "ids", ids, dev, false, kI32, {kAny}));
  RETURN_IF_ERROR(Check(op, "table", table, dev, false, kWeight, {kAny, kAny}));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {ids.shape[0], table.shape[1]}));
  return EmbeddingImpl(ids, table, out);
}

absl::Status Backend::RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor* y) {
  const char* op = "RmsNorm";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "x", x, dev, false, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "w", w, dev, false, kF32, {x.shape[1]}));
  RETURN_IF_ERROR(CheckOutPtr(op, "y", y));
  RETURN_IF_ERROR(Check(op, "y", *y, dev, true, kF32, {x.shape[0], x.shape[1]}));
  if (!(eps >= 0.0f)) return Bad(op, "eps", ">= 0", absl::StrCat(eps));
  return RmsNormImpl(x, nullptr, w, eps, y);
}

absl::Status Backend::AddRmsNorm(const Tensor& x, Tensor* residual, const Tensor& w, float eps,
                                 Tensor* y) {
  const char* op = "AddRmsNorm";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "x", x, dev, false, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(CheckOutPtr(op, "residual", residual));
  RETURN_IF_ERROR(Check(op, "residual", *residual, dev, true, kF32, {x.shape[0], x.shape[1]}));
  RETURN_IF_ERROR(Check(op, "w", w, dev, false, kF32, {x.shape[1]}));
  RETURN_IF_ERROR(CheckOutPtr(op, "y", y));
  RETURN_IF_ERROR(Check(op, "y", *y, dev, true, kF32, {x.shape[0], x.shape[1]}));
  if (!(eps >= 0.0f)) return Bad(op, "eps", ">= 0", absl::StrCat(eps));
  if (x.shape[0] > 0 && residual->data() == y->data()) {
    return Bad(op, "y", "a buffer distinct from residual", "residual");
  }
  return RmsNormImpl(x, residual, w, eps, y);
}

absl::Status Backend::HeadRmsNorm(Tensor* x, const Tensor& w, float eps) {
  const char* op = "HeadRmsNorm";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(CheckOutPtr(op, "x", x));
  RETURN_IF_ERROR(Check(op, "x", *x, dev, true, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "w", w, dev, false, kF32, {kAny}));
  const int64_t d = w.shape[0];
  if (d == 0 || x->shape[1] % d != 0) {
    return Bad(op, "x", absl::StrCat("a width that is a multiple of head_dim ", d),
               ShapeString(x->shape));
  }
  if (!(eps >= 0.0f)) return Bad(op, "eps", ">= 0", absl::StrCat(eps));
  return HeadRmsNormImpl(x, w, eps);
}

absl::Status Backend::Rope(const RopeConfig& config, int64_t head_dim, const Tensor& positions,
                           Tensor* q, Tensor* k) {
  const char* op = "Rope";
  const DeviceSpec dev = device();
  ASSIGN_OR_RETURN(RopeFrequencies freqs, ComputeRopeFrequencies(config, head_dim));
  RETURN_IF_ERROR(Check(op, "positions", positions, dev, false, kI32, {kAny}));
  const int64_t t = positions.shape[0];
  RETURN_IF_ERROR(CheckOutPtr(op, "q", q));
  RETURN_IF_ERROR(CheckOutPtr(op, "k", k));
  RETURN_IF_ERROR(Check(op, "q", *q, dev, true, kF32, {t, kAny}));
  RETURN_IF_ERROR(Check(op, "k", *k, dev, true, kF32, {t, kAny}));
  if (q->shape[1] % head_dim != 0) {
    return Bad(op, "q", absl::StrCat("a width that is a multiple of head_dim ", head_dim),
               ShapeString(q->shape));
  }
  if (k->shape[1] % head_dim != 0) {
    return Bad(op, "k", absl::StrCat("a width that is a multiple of head_dim ", head_dim),
               ShapeString(k->shape));
  }
  return RopeImpl(freqs, config.layout, head_dim, positions, q, k);
}

absl::Status Backend::SiluAndMul(const Tensor& gate, const Tensor& up, Tensor* out) {
  const char* op = "SiluAndMul";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "gate", gate, dev, false, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "up", up, dev, false, kF32, {gate.shape[0], gate.shape[1]}));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {gate.shape[0], gate.shape[1]}));
  return SiluAndMulImpl(gate, &up, out);
}

absl::Status Backend::SiluAndMulPacked(const Tensor& gate_up, Tensor* out) {
  const char* op = "SiluAndMulPacked";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "gate_up", gate_up, dev, false, kF32, {kAny, kAny}));
  if (gate_up.shape[1] % 2 != 0) {
    return Bad(op, "gate_up", "an even width [T, 2I]", ShapeString(gate_up.shape));
  }
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(
      Check(op, "out", *out, dev, true, kF32, {gate_up.shape[0], gate_up.shape[1] / 2}));
  if (gate_up.shape[0] > 0 && out->data() == gate_up.data()) {
    return Bad(op, "out", "a buffer distinct from gate_up", "gate_up");
  }
  return SiluAndMulImpl(gate_up, nullptr, out);
}

absl::Status Backend::Add(const Tensor& a, const Tensor& b, Tensor* out) {
  const char* op = "Add";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "a", a, dev, false, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "b", b, dev, false, kF32, {a.shape[0], a.shape[1]}));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {a.shape[0], a.shape[1]}));
  return AddImpl(a, b, out);
}

absl::Status Backend::SigmoidGateMulAdd(const Tensor& gate_logit, const Tensor& x, Tensor* out) {
  const char* op = "SigmoidGateMulAdd";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "x", x, dev, false, kF32, {kAny, kAny}));
  RETURN_IF_ERROR(Check(op, "gate_logit", gate_logit, dev, false, kF32, {x.shape[0], 1}));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {x.shape[0], x.shape[1]}));
  return SigmoidGateMulAddImpl(gate_logit, x, out);
}

// ---- attention ----

absl::Status Backend::WriteKvCache(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                                   Tensor* k_cache, Tensor* v_cache) {
  const char* op = "WriteKvCache";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(CheckOutPtr(op, "k_cache", k_cache));
  RETURN_IF_ERROR(CheckOutPtr(op, "v_cache", v_cache));
  RETURN_IF_ERROR(Check(op, "k_cache", *k_cache, dev, true, kWeight, {kAny, kAny, kAny, kAny}));
  const auto& cs = k_cache->shape;
  RETURN_IF_ERROR(CheckStorage(op, "v_cache", *v_cache, dev, true));
  RETURN_IF_ERROR(CheckDtype(op, "v_cache", *v_cache, {k_cache->dtype}));
  RETURN_IF_ERROR(CheckShape(op, "v_cache", *v_cache, {cs[0], cs[1], cs[2], cs[3]}));
  RETURN_IF_ERROR(Check(op, "k", k, dev, false, kF32, {kAny, cs[2] * cs[3]}));
  RETURN_IF_ERROR(Check(op, "v", v, dev, false, kF32, {k.shape[0], cs[2] * cs[3]}));
  RETURN_IF_ERROR(Check(op, "slot_mapping", slot_mapping, dev, false, kI32, {k.shape[0]}));
  return WriteKvCacheImpl(k, v, slot_mapping, k_cache, v_cache);
}

absl::Status Backend::AttentionPrologue(const AttentionPrologueArgs& a) {
  const char* op = "AttentionPrologue";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(CheckOutPtr(op, "q", a.q));
  RETURN_IF_ERROR(CheckOutPtr(op, "k", a.k));
  RETURN_IF_ERROR(CheckOutPtr(op, "v", a.v));
  RETURN_IF_ERROR(CheckOutPtr(op, "positions", a.positions));
  RETURN_IF_ERROR(CheckOutPtr(op, "slot_mapping", a.slot_mapping));
  RETURN_IF_ERROR(CheckOutPtr(op, "k_cache", a.k_cache));
  RETURN_IF_ERROR(CheckOutPtr(op, "v_cache", a.v_cache));
  const int64_t d = a.head_dim;
  if (d <= 0 || d % 2 != 0) return Bad(op, "head_dim", "a positive even number", absl::StrCat(d));
  auto freqs = ComputeRopeFrequencies(a.rope, d);
  if (!freqs.ok()) return Annotate(freqs.status(), op);
  RETURN_IF_ERROR(Check(op, "positions", *a.positions, dev, false, kI32, {kAny}));
  const int64_t t = a.positions->shape[0];
  RETURN_IF_ERROR(Check(op, "q", *a.q, dev, true, kF32, {t, kAny}));
  RETURN_IF_ERROR(Check(op, "k", *a.k, dev, true, kF32, {t, kAny}));
  if (a.q->shape[1] % d != 0) {
    return Bad(op, "q", absl::StrCat("a width that is a multiple of head_dim ", d),
               ShapeString(a.q->shape));
  }
  if (a.k->shape[1] % d != 0) {
    return Bad(op, "k", absl::StrCat("a width that is a multiple of head_dim ", d),
               ShapeString(a.k->shape));
  }
  if (t > 0 && a.k->data() == a.q->data()) return Bad(op, "k", "a buffer distinct from q", "q");
  const int64_t num_kv = a.k->shape[1] / d;
  RETURN_IF_ERROR(Check(op, "v", *a.v, dev, false, kF32, {t, num_kv * d}));
  RETURN_IF_ERROR(Check(op, "slot_mapping", *a.slot_mapping, dev, false, kI32, {t}));
  RETURN_IF_ERROR(Check(op, "k_cache", *a.k_cache, dev, true, kWeight, {kAny, kAny, num_kv, d}));
  const auto& cs = a.k_cache->shape;
  RETURN_IF_ERROR(CheckStorage(op, "v_cache", *a.v_cache, dev, true));
  RETURN_IF_ERROR(CheckDtype(op, "v_cache", *a.v_cache, {a.k_cache->dtype}));
  RETURN_IF_ERROR(CheckShape(op, "v_cache", *a.v_cache, {cs[0], cs[1], cs[2], cs[3]}));
  if (a.q_norm != nullptr) RETURN_IF_ERROR(Check(op, "q_norm", *a.q_norm, dev, false, kF32, {d}));
  if (a.k_norm != nullptr) RETURN_IF_ERROR(Check(op, "k_norm", *a.k_norm, dev, false, kF32, {d}));
  if ((a.q_norm != nullptr || a.k_norm != nullptr) && !(a.norm_eps >= 0.0f)) {
    return Bad(op, "norm_eps", ">= 0", absl::StrCat(a.norm_eps));
  }
  return AttentionPrologueImpl(a, *freqs);
}

absl::Status Backend::AttentionPrologueImpl(const AttentionPrologueArgs& a,
                                            const RopeFrequencies& freqs) {
  // The separate ops' implementations, in the model's order (their checks
  // are covered by AttentionPrologue's).
  auto compose = [&]() -> absl::Status {
    if (a.q_norm != nullptr) RETURN_IF_ERROR(HeadRmsNormImpl(a.q, *a.q_norm, a.norm_eps));
    if (a.k_norm != nullptr) RETURN_IF_ERROR(HeadRmsNormImpl(a.k, *a.k_norm, a.norm_eps));
    RETURN_IF_ERROR(RopeImpl(freqs, a.rope.layout, a.head_dim, *a.positions, a.q, a.k));
    return WriteKvCacheImpl(*a.k, *a.v, *a.slot_mapping, a.k_cache, a.v_cache);
  };
  return Annotate(compose(), "AttentionPrologue");
}

absl::Status Backend::PagedAttention(const PagedAttentionArgs& args, Tensor* out) {
  const char* op = "PagedAttention";
  const DeviceSpec dev = device();
  if (args.q == nullptr) return Bad(op, "q", "a tensor", "nullptr");
  if (args.k_cache == nullptr) return Bad(op, "k_cache", "a tensor", "nullptr");
  if (args.v_cache == nullptr) return Bad(op, "v_cache", "a tensor", "nullptr");
  if (args.metadata == nullptr) return Bad(op, "metadata", "metadata", "nullptr");
  const Tensor& kc = *args.k_cache;
  RETURN_IF_ERROR(Check(op, "k_cache", kc, dev, false, kWeight, {kAny, kAny, kAny, kAny}));
  const auto& cs = kc.shape;
  RETURN_IF_ERROR(CheckStorage(op, "v_cache", *args.v_cache, dev, false));
  RETURN_IF_ERROR(CheckDtype(op, "v_cache", *args.v_cache, {kc.dtype}));
  RETURN_IF_ERROR(CheckShape(op, "v_cache", *args.v_cache, {cs[0], cs[1], cs[2], cs[3]}));
  const int64_t num_kv = cs[2], d = cs[3];
  if (cs[1] <= 0 || num_kv <= 0 || d <= 0) {
    return Bad(op, "k_cache", "positive block_size, heads and head_dim", ShapeString(cs));
  }
  if (args.num_q_heads <= 0 || args.num_q_heads % num_kv != 0) {
    return Bad(op, "num_q_heads", absl::StrCat("a positive multiple of num_kv_heads ", num_kv),
               absl::StrCat(args.num_q_heads));
  }
  RETURN_IF_ERROR(Check(op, "q", *args.q, dev, false, kF32, {kAny, args.num_q_heads * d}));
  const AttentionMetadata& m = *args.metadata;
  RETURN_IF_ERROR(Check(op, "metadata.query_start", m.query_start, dev, false, kI32, {kAny}));
  const int64_t num_seqs = m.query_start.shape[0] - 1;
  if (num_seqs < 0) return Bad(op, "metadata.query_start", "[num_seqs + 1]", "[0]");
  RETURN_IF_ERROR(
      Check(op, "metadata.context_lens", m.context_lens, dev, false, kI32, {num_seqs}));
  RETURN_IF_ERROR(
      Check(op, "metadata.block_tables", m.block_tables, dev, false, kI32, {num_seqs, kAny}));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {args.q->shape[0], args.q->shape[1]}));
  if (args.q->shape[0] > 0 && out->data() == args.q->data()) {
    return Bad(op, "out", "a buffer distinct from q", "q");
  }
  const float scale = args.scale > 0.0f ? args.scale
                                        : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  return PagedAttentionImpl(args, scale, out);
}

// ---- MoE ----

absl::Status Backend::MoeGate(const Tensor& router_logits, const RoutingParams& routing,
                              Tensor* topk_ids, Tensor* topk_weights) {
  const char* op = "MoeGate";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "router_logits", router_logits, dev, false, kF32, {kAny, kAny}));
  const int64_t t = router_logits.shape[0], e = router_logits.shape[1];
  const int64_t top_k = routing.top_k;
  if (top_k < 1 || top_k > e) {
    return Bad(op, "top_k", absl::StrCat("1..", e, " (num_experts)"), absl::StrCat(top_k));
  }
  RETURN_IF_ERROR(CheckOutPtr(op, "topk_ids", topk_ids));
  RETURN_IF_ERROR(CheckOutPtr(op, "topk_weights", topk_weights));
  RETURN_IF_ERROR(Check(op, "topk_ids", *topk_ids, dev, true, kI32, {t, top_k}));
  RETURN_IF_ERROR(Check(op, "topk_weights", *topk_weights, dev, true, kF32, {t, top_k}));
  if (std::optional<UnsupportedRoutingField> f = FindUnsupportedRouting(routing)) {
    return absl::UnimplementedError(
        absl::StrCat(op, ": routing.", f->field, ": expected ", f->expected, ", found ", f->found));
  }
  return MoeGateImpl(router_logits, routing, topk_ids, topk_weights);
}

absl::Status Backend::MoePermute(const Tensor& hidden, const Tensor& topk_ids,
                                 MoePermutation* out) {
  const char* op = "MoePermute";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "hidden", hidden, dev, false, kF32, {kAny, kAny}));
  const int64_t t = hidden.shape[0], h = hidden.shape[1];
  RETURN_IF_ERROR(Check(op, "topk_ids", topk_ids, dev, false, kI32, {t, kAny}));
  const int64_t r = t * topk_ids.shape[1];
  if (out == nullptr) return Bad(op, "out", "a MoePermutation", "nullptr");
  RETURN_IF_ERROR(Check(op, "out.rows", out->rows, dev, true, kF32, {r, h}));
  RETURN_IF_ERROR(Check(op, "out.expert_offsets", out->expert_offsets, dev, true, kI32, {kAny}));
  if (out->expert_offsets.shape[0] < 2) {
    return Bad(op, "out.expert_offsets", "[num_experts + 1] with num_experts >= 1",
               ShapeString(out->expert_offsets.shape));
  }
  RETURN_IF_ERROR(Check(op, "out.permuted_to_assignment", out->permuted_to_assignment, dev,
                        true, kI32, {r}));
  RETURN_IF_ERROR(Check(op, "out.assignment_to_permuted", out->assignment_to_permuted, dev,
                        true, kI32, {r}));
  return MoePermuteImpl(hidden, topk_ids, out);
}

absl::Status Backend::GroupedExpertMatMul(const Tensor& rows, const Tensor& expert_offsets,
                                          absl::Span<const LinearWeight> weights, Tensor* out) {
  const char* op = "GroupedExpertMatMul";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "rows", rows, dev, false, kF32, {kAny, kAny}));
  const int64_t k = rows.shape[1];
  RETURN_IF_ERROR(Check(op, "expert_offsets", expert_offsets, dev, false, kI32,
                        {static_cast<int64_t>(weights.size()) + 1}));
  int64_t n = -1;
  for (size_t e = 0; e < weights.size(); ++e) {
    if (!weights[e].defined()) continue;
    const std::string arg = absl::StrCat("weights[", e, "]");
    RETURN_IF_ERROR(CheckFormat(*this, LinearOp::kGroupedExpertMatMul, arg.c_str(), weights[e]));
    RETURN_IF_ERROR(CheckLinearWeight(op, arg.c_str(), weights[e], dev, kWeight, n, k));
    n = weights[e].out_features();
  }
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {rows.shape[0], n}));
  if (rows.shape[0] > 0 && out->data() == rows.data()) {
    return Bad(op, "out", "a buffer distinct from rows", "rows");
  }
  return GroupedExpertMatMulImpl(rows, expert_offsets, weights, out);
}

absl::Status Backend::GroupedExpertGateUp(const Tensor& rows, const Tensor& expert_offsets,
                                          absl::Span<const LinearWeight> gate,
                                          absl::Span<const LinearWeight> up, Tensor* out) {
  const char* op = "GroupedExpertGateUp";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "rows", rows, dev, false, kF32, {kAny, kAny}));
  const int64_t k = rows.shape[1];
  if (gate.size() != up.size()) {
    return Bad(op, "up", absl::StrCat(gate.size(), " experts like gate"),
               absl::StrCat(up.size()));
  }
  RETURN_IF_ERROR(Check(op, "expert_offsets", expert_offsets, dev, false, kI32,
                        {static_cast<int64_t>(gate.size()) + 1}));
  int64_t n = -1;
  for (size_t e = 0; e < gate.size(); ++e) {
    if (gate[e].defined() != up[e].defined()) {
      return Bad(op, absl::StrCat("up[", e, "]").c_str(),
                 gate[e].defined() ? "a tensor like gate" : "none like gate", "the opposite");
    }
    if (!gate[e].defined()) continue;
    const std::string g = absl::StrCat("gate[", e, "]"), u = absl::StrCat("up[", e, "]");
    RETURN_IF_ERROR(CheckFormat(*this, LinearOp::kGroupedExpertGateUp, g.c_str(), gate[e]));
    RETURN_IF_ERROR(CheckFormat(*this, LinearOp::kGroupedExpertGateUp, u.c_str(), up[e]));
    RETURN_IF_ERROR(CheckLinearWeight(op, g.c_str(), gate[e], dev, kWeight, n, k));
    n = gate[e].out_features();
    if (up[e].format != gate[e].format) {
      return Bad(op, u.c_str(),
                 absl::StrCat("weight format ", WeightFormatName(gate[e].format), " like gate"),
                 WeightFormatName(up[e].format));
    }
    RETURN_IF_ERROR(CheckLinearWeight(op, u.c_str(), up[e], dev, {gate[e].weight.dtype}, n, k));
  }
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {rows.shape[0], n}));
  if (rows.shape[0] > 0 && out->data() == rows.data()) {
    return Bad(op, "out", "a buffer distinct from rows", "rows");
  }
  return GroupedExpertGateUpImpl(rows, expert_offsets, gate, up, out);
}

absl::Status Backend::GroupedExpertGateUpImpl(const Tensor& rows, const Tensor& expert_offsets,
                                              absl::Span<const LinearWeight> gate,
                                              absl::Span<const LinearWeight> up, Tensor* out) {
  ASSIGN_OR_RETURN(Tensor up_out, Empty(DataType::kFloat32, out->shape));
  RETURN_IF_ERROR(GroupedExpertMatMul(rows, expert_offsets, gate, out));
  RETURN_IF_ERROR(GroupedExpertMatMul(rows, expert_offsets, up, &up_out));
  return SiluAndMul(*out, up_out, out);
}

absl::Status Backend::MoeUnpermute(const Tensor& expert_out, const Tensor& topk_weights,
                                   const MoePermutation& perm, Tensor* out) {
  const char* op = "MoeUnpermute";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "topk_weights", topk_weights, dev, false, kF32, {kAny, kAny}));
  const int64_t t = topk_weights.shape[0], r = t * topk_weights.shape[1];
  RETURN_IF_ERROR(Check(op, "expert_out", expert_out, dev, false, kF32, {r, kAny}));
  RETURN_IF_ERROR(Check(op, "perm.assignment_to_permuted", perm.assignment_to_permuted, dev,
                        false, kI32, {r}));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {t, expert_out.shape[1]}));
  if (r > 0 && out->data() == expert_out.data()) {
    return Bad(op, "out", "a buffer distinct from expert_out", "expert_out");
  }
  return MoeUnpermuteImpl(expert_out, topk_weights, perm, out);
}

namespace {
constexpr std::initializer_list<DataType> kWire = {DataType::kFloat32, DataType::kBFloat16};

// W from the counts tensor, C from a [W*C, *] buffer.
absl::Status CheckSlots(const char* op, const char* arg, const Tensor& buffer, int64_t world,
                        int64_t* capacity) {
  if (world < 1) return Bad(op, "counts", "[W] with W >= 1 ranks", ShapeString({world}));
  if (buffer.shape[0] % world != 0) {
    return Bad(op, arg, absl::StrCat("W*C rows (a multiple of W = ", world, ")"),
               ShapeString(buffer.shape));
  }
  *capacity = buffer.shape[0] / world;
  return absl::OkStatus();
}
}  // namespace

absl::Status Backend::EpDispatchPack(const Tensor& hidden, const Tensor& topk_ids,
                                     const Tensor& topk_weights, const Tensor& expert_to_rank,
                                     Tensor* send_rows, Tensor* send_routes, Tensor* send_counts,
                                     Tensor* token_slots) {
  const char* op = "EpDispatchPack";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "hidden", hidden, dev, false, kF32, {kAny, kAny}));
  const int64_t t = hidden.shape[0], h = hidden.shape[1];
  RETURN_IF_ERROR(Check(op, "topk_ids", topk_ids, dev, false, kI32, {t, kAny}));
  const int64_t k = topk_ids.shape[1];
  if (k < 1) return Bad(op, "topk_ids", "[T, k] with k >= 1", ShapeString(topk_ids.shape));
  RETURN_IF_ERROR(Check(op, "topk_weights", topk_weights, dev, false, kF32, {t, k}));
  RETURN_IF_ERROR(Check(op, "expert_to_rank", expert_to_rank, dev, false, kI32, {kAny}));
  if (expert_to_rank.shape[0] < 1) {
    return Bad(op, "expert_to_rank", "[E] with E >= 1", ShapeString(expert_to_rank.shape));
  }
  for (Tensor* out : {send_rows, send_routes, send_counts, token_slots}) {
    RETURN_IF_ERROR(CheckOutPtr(op, "outputs", out));
  }
  RETURN_IF_ERROR(Check(op, "send_counts", *send_counts, dev, true, kI32, {kAny}));
  const int64_t w = send_counts->shape[0];
  RETURN_IF_ERROR(Check(op, "send_rows", *send_rows, dev, true, kWire, {kAny, h}));
  int64_t c = 0;
  RETURN_IF_ERROR(CheckSlots(op, "send_rows", *send_rows, w, &c));
  if (c < t) {
    return Bad(op, "send_rows", absl::StrCat("at least T = ", t, " slots per rank"),
               absl::StrCat(c, " (", ShapeString(send_rows->shape), " over ", w, " ranks)"));
  }
  RETURN_IF_ERROR(Check(op, "send_routes", *send_routes, dev, true, kI32, {w * c, 2 * k}));
  RETURN_IF_ERROR(Check(op, "token_slots", *token_slots, dev, true, kI32, {t, w}));
  return EpDispatchPackImpl(hidden, topk_ids, topk_weights, expert_to_rank, send_rows, send_routes,
                            send_counts, token_slots);
}

absl::Status Backend::EpDispatchUnpack(const Tensor& recv_rows, const Tensor& recv_routes,
                                       const Tensor& recv_counts, Tensor* rows,
                                       Tensor* expert_offsets, Tensor* route_rows) {
  const char* op = "EpDispatchUnpack";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "recv_counts", recv_counts, dev, false, kI32, {kAny}));
  RETURN_IF_ERROR(Check(op, "recv_rows", recv_rows, dev, false, kWire, {kAny, kAny}));
  int64_t c = 0;
  RETURN_IF_ERROR(CheckSlots(op, "recv_rows", recv_rows, recv_counts.shape[0], &c));
  const int64_t slots = recv_rows.shape[0], h = recv_rows.shape[1];
  RETURN_IF_ERROR(Check(op, "recv_routes", recv_routes, dev, false, kI32, {slots, kAny}));
  const int64_t k = recv_routes.shape[1] / 2;
  if (k < 1 || recv_routes.shape[1] != 2 * k) {
    return Bad(op, "recv_routes", "[W*C, 2k] with k >= 1", ShapeString(recv_routes.shape));
  }
  for (Tensor* out : {rows, expert_offsets, route_rows})
    RETURN_IF_ERROR(CheckOutPtr(op, "outputs", out));
  RETURN_IF_ERROR(Check(op, "rows", *rows, dev, true, kF32, {kAny, h}));
  RETURN_IF_ERROR(Check(op, "expert_offsets", *expert_offsets, dev, true, kI32, {kAny}));
  if (expert_offsets->shape[0] < 2) {
    return Bad(op, "expert_offsets", "[E + 1] with E >= 1", ShapeString(expert_offsets->shape));
  }
  RETURN_IF_ERROR(Check(op, "route_rows", *route_rows, dev, true, kI32, {slots, k}));
  return EpDispatchUnpackImpl(recv_rows, recv_routes, recv_counts, rows, expert_offsets,
                              route_rows);
}

absl::Status Backend::EpCombinePack(const Tensor& expert_out, const Tensor& recv_routes,
                                    const Tensor& recv_counts, const Tensor& route_rows,
                                    Tensor* back_rows) {
  const char* op = "EpCombinePack";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "expert_out", expert_out, dev, false, kF32, {kAny, kAny}));
  const int64_t h = expert_out.shape[1];
  RETURN_IF_ERROR(Check(op, "recv_counts", recv_counts, dev, false, kI32, {kAny}));
  RETURN_IF_ERROR(CheckOutPtr(op, "back_rows", back_rows));
  RETURN_IF_ERROR(Check(op, "back_rows", *back_rows, dev, true, kWire, {kAny, h}));
  int64_t c = 0;
  RETURN_IF_ERROR(CheckSlots(op, "back_rows", *back_rows, recv_counts.shape[0], &c));
  const int64_t slots = back_rows->shape[0];
  RETURN_IF_ERROR(Check(op, "route_rows", route_rows, dev, false, kI32, {slots, kAny}));
  const int64_t k = route_rows.shape[1];
  if (k < 1) return Bad(op, "route_rows", "[W*C, k] with k >= 1", ShapeString(route_rows.shape));
  RETURN_IF_ERROR(Check(op, "recv_routes", recv_routes, dev, false, kI32, {slots, 2 * k}));
  return EpCombinePackImpl(expert_out, recv_routes, recv_counts, route_rows, back_rows);
}

absl::Status Backend::EpCombineUnpack(const Tensor& returned_rows, const Tensor& token_slots,
                                      Tensor* out) {
  const char* op = "EpCombineUnpack";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "token_slots", token_slots, dev, false, kI32, {kAny, kAny}));
  const int64_t t = token_slots.shape[0], w = token_slots.shape[1];
  RETURN_IF_ERROR(Check(op, "returned_rows", returned_rows, dev, false, kWire, {kAny, kAny}));
  int64_t c = 0;
  RETURN_IF_ERROR(CheckSlots(op, "returned_rows", returned_rows, w, &c));
  RETURN_IF_ERROR(CheckOutPtr(op, "out", out));
  RETURN_IF_ERROR(Check(op, "out", *out, dev, true, kF32, {t, returned_rows.shape[1]}));
  if (t > 0 && out->data() == returned_rows.data()) {
    return Bad(op, "out", "a buffer distinct from returned_rows", "returned_rows");
  }
  return EpCombineUnpackImpl(returned_rows, token_slots, out);
}

absl::Status Backend::EpDispatchPackImpl(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         Tensor*, Tensor*, Tensor*, Tensor*) {
  return absl::UnimplementedError(
      absl::StrCat("EpDispatchPack: the ", device().ToString(), " backend has no such op"));
}

absl::Status Backend::EpDispatchUnpackImpl(const Tensor&, const Tensor&, const Tensor&, Tensor*,
                                           Tensor*, Tensor*) {
  return absl::UnimplementedError(
      absl::StrCat("EpDispatchUnpack: the ", device().ToString(), " backend has no such op"));
}

absl::Status Backend::EpCombinePackImpl(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        Tensor*) {
  return absl::UnimplementedError(
      absl::StrCat("EpCombinePack: the ", device().ToString(), " backend has no such op"));
}

absl::Status Backend::EpCombineUnpackImpl(const Tensor&, const Tensor&, Tensor*) {
  return absl::UnimplementedError(
      absl::StrCat("EpCombineUnpack: the ", device().ToString(), " backend has no such op"));
}

absl::Status Backend::SampleTokens(const Tensor& logits, absl::Span<const SampleRow> rows,
                                   absl::Span<const SampleEdit> edits, int64_t top_n,
                                   bool processed_logprobs, Tensor* packed) {
  const char* op = "SampleTokens";
  const DeviceSpec dev = device();
  RETURN_IF_ERROR(Check(op, "logits", logits, dev, false, kF32, {kAny, kAny}));
  const int64_t num_logits = logits.shape[0];
  const int64_t vocab = logits.shape[1];
  if (vocab < 1 || vocab > (int64_t{1} << 30)) {
    return Bad(op, "logits.shape[1]", "1..2^30", absl::StrCat(vocab));
  }
  if (top_n < 0 || top_n > 20 || top_n > vocab) {
    return Bad(op, "top_n", absl::StrCat("0..", std::min<int64_t>(20, vocab)),
               absl::StrCat(top_n));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const SampleRow& r = rows[i];
    auto bad = [&](const char* field, const std::string& expected, const std::string& got) {
      return Bad(op, absl::StrCat("rows[", i, "].", field).c_str(), expected, got);
    };
    if (r.logits_row < 0 || r.logits_row >= num_logits) {
      return bad("logits_row", absl::StrCat("0..", num_logits - 1), absl::StrCat(r.logits_row));
    }
    if (!(r.temperature == 0.0f || (r.temperature > 0.0f && std::isfinite(r.temperature)))) {
      return bad("temperature", "0 or finite > 0", absl::StrCat(r.temperature));
    }
    if (!(r.top_p > 0.0f && r.top_p <= 1.0f)) {
      return bad("top_p", "(0, 1]", absl::StrCat(r.top_p));
    }
    if (r.num_top_logprobs < 0 || r.num_top_logprobs > top_n) {
      return bad("num_top_logprobs", absl::StrCat("0..", top_n), absl::StrCat(r.num_top_logprobs));
    }
    if (r.edits_begin < 0 || r.edits_end < r.edits_begin ||
        static_cast<size_t>(r.edits_end) > edits.size()) {
      return bad("edits_begin..edits_end", absl::StrCat("a range within [0, ", edits.size(), "]"),
                 absl::StrCat(r.edits_begin, "..", r.edits_end));
    }
    for (int32_t e = r.edits_begin; e < r.edits_end; ++e) {
      if (edits[static_cast<size_t>(e)].token_id < 0 ||
          edits[static_cast<size_t>(e)].token_id >= vocab) {
        return Bad(op, absl::StrCat("edits[", e, "].token_id").c_str(),
                   absl::StrCat("0..", vocab - 1),
                   absl::StrCat(edits[static_cast<size_t>(e)].token_id));
      }
    }
  }
  RETURN_IF_ERROR(CheckOutPtr(op, "packed", packed));
  RETURN_IF_ERROR(Check(op, "packed", *packed, dev, true, kI32,
                        {static_cast<int64_t>(rows.size()), kSampleHeader + 2 * top_n}));
  if (rows.empty()) return absl::OkStatus();
  return SampleTokensImpl(logits, rows, edits, top_n, processed_logprobs, packed);
}

absl::Status Backend::SampleTokensImpl(const Tensor& /*logits*/, absl::Span<const SampleRow> /*rows*/,
                                       absl::Span<const SampleEdit> /*edits*/, int64_t /*top_n*/,
                                       bool /*processed_logprobs*/, Tensor* /*packed*/) {
  return absl::UnimplementedError(absl::StrCat(
      "SampleTokens is not implemented on ", device().ToString(),
      "; the CPU worker samples host logits with sampling::Sampler"));
}

absl::StatusOr<std::shared_ptr<Storage>> Backend::AllocateStagingHost(size_t bytes) {
  return AllocateHostStorage(bytes);
}

absl::Status Backend::CopyToStagingAsync(const Tensor& src, void* dst) {
  return CopyToHost(src, dst, src.nbytes());
}

absl::Status Backend::CopyFromStagingAsync(const void* src, Tensor* dst) {
  if (dst == nullptr) return Bad("CopyFromStagingAsync", "dst", "a tensor", "nullptr");
  return CopyFromHost(src, dst->nbytes(), dst);
}

absl::Status Backend::EnqueueHostCall(void (*fn)(void*), void* arg) {
  RETURN_IF_ERROR(Synchronize());
  fn(arg);
  return absl::OkStatus();
}

namespace {

// Host time after the backend's queue drained.
class HostTimestamps final : public Backend::Timestamps {
 public:
  HostTimestamps(Backend& backend, int n) : backend_(backend), marks_(static_cast<size_t>(n)) {}

  absl::Status Record(int i) override {
    if (i < 0 || i >= static_cast<int>(marks_.size())) {
      return absl::OutOfRangeError(
          absl::StrCat("Timestamps::Record: mark ", i, " outside [0, ", marks_.size(), ")"));
    }
    RETURN_IF_ERROR(backend_.Synchronize());
    marks_[static_cast<size_t>(i)] = std::chrono::steady_clock::now();
    return absl::OkStatus();
  }

  absl::StatusOr<double> Seconds(int from, int to) override {
    for (int i : {from, to}) {
      if (i < 0 || i >= static_cast<int>(marks_.size())) {
        return absl::OutOfRangeError(
            absl::StrCat("Timestamps::Seconds: mark ", i, " outside [0, ", marks_.size(), ")"));
      }
      if (!marks_[static_cast<size_t>(i)].has_value()) {
        return absl::FailedPreconditionError(
            absl::StrCat("Timestamps::Seconds: mark ", i, " was never recorded"));
      }
    }
    return std::chrono::duration<double>(*marks_[static_cast<size_t>(to)] -
                                         *marks_[static_cast<size_t>(from)])
        .count();
  }

 private:
  Backend& backend_;
  std::vector<std::optional<std::chrono::steady_clock::time_point>> marks_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend::Timestamps>> Backend::CreateTimestamps(int n) {
  if (n < 0) return Bad("CreateTimestamps", "n", "a count >= 0", absl::StrCat(n));
  return std::unique_ptr<Timestamps>(new HostTimestamps(*this, n));
}

absl::Status Backend::FillDummy(Tensor* t, uint64_t state0, float half_width, bool ones) {
  if (t == nullptr || !t->defined()) return Bad("FillDummy", "t", "a tensor", "none");
  // On the CPU the tensor is host memory: fill it in place.
  if (device().type == DeviceType::kCpu) return FillDummyHost(t, state0, half_width, ones);
  ASSIGN_OR_RETURN(Tensor host, EmptyHostTensor(t->dtype, t->shape));
  RETURN_IF_ERROR(FillDummyHost(&host, state0, half_width, ones));
  return CopyFromHost(host.data(), host.nbytes(), t);
}

absl::StatusOr<std::unique_ptr<Backend::Graph>> Backend::Capture(
    const std::function<absl::Status()>& /*body*/) {
  return absl::UnimplementedError(
      absl::StrCat("graph capture is not supported on ", device().ToString()));
}

absl::StatusOr<MoePermutation> EmptyMoePermutation(Backend& backend, int64_t num_tokens,
                                                   int64_t top_k, int64_t hidden,
                                                   int64_t num_experts) {
  MoePermutation p;
  const int64_t r = num_tokens * top_k;
  ASSIGN_OR_RETURN(p.rows, backend.Empty(DataType::kFloat32, {r, hidden}));
  ASSIGN_OR_RETURN(p.expert_offsets, backend.Empty(DataType::kInt32, {num_experts + 1}));
  ASSIGN_OR_RETURN(p.permuted_to_assignment, backend.Empty(DataType::kInt32, {r}));
  ASSIGN_OR_RETURN(p.assignment_to_permuted, backend.Empty(DataType::kInt32, {r}));
  return p;
}

}  // namespace epserve::kernels
