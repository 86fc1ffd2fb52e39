#include "tests/models/quantize_reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/model_config/model_config.h"
#include "common/model_config/tensor_spec.h"
#include "common/safetensors/checkpoint.h"
#include "common/safetensors/writer.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace epserve::testing {
namespace {

namespace fs = std::filesystem;

constexpr float kFp8Max = 448.0f;
// Defaults of the test checkpoints (a patch may change them).
constexpr int64_t kFp8Block[2] = {16, 32};
constexpr int64_t kAwqGroup = 32;
constexpr int kAwqOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

safetensors::TensorToWrite F32Tensor(const std::string& name, const std::vector<int64_t>& shape,
                                     const std::vector<float>& v) {
  return {name, DataType::kFloat32, shape, Bytes(v.data(), v.size() * sizeof(float))};
}

absl::Status WriteJson(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2);
  return out ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path.string()));
}

// fp8-block of w [n, k]: the fp8 bytes, the scales, and the dequantized values.
void QuantizeFp8(const std::vector<float>& w, int64_t n, int64_t k, int64_t bn, int64_t bk,
                 std::vector<uint8_t>* q, std::vector<float>* scales, std::vector<float>* deq) {
  const int64_t rows = (n + bn - 1) / bn, cols = (k + bk - 1) / bk;
  q->assign(static_cast<size_t>(n * k), 0);
  scales->assign(static_cast<size_t>(rows * cols), 1.0f);
  deq->assign(static_cast<size_t>(n * k), 0.0f);
  for (int64_t br = 0; br < rows; ++br) {
    for (int64_t bc = 0; bc < cols; ++bc) {
      float amax = 0.0f;
      for (int64_t r = br * bn; r < std::min(n, (br + 1) * bn); ++r) {
        for (int64_t c = bc * bk; c < std::min(k, (bc + 1) * bk); ++c) {
          amax = std::max(amax, std::fabs(w[static_cast<size_t>(r * k + c)]));
        }
      }
      const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
      (*scales)[static_cast<size_t>(br * cols + bc)] = scale;
      for (int64_t r = br * bn; r < std::min(n, (br + 1) * bn); ++r) {
        for (int64_t c = bc * bk; c < std::min(k, (bc + 1) * bk); ++c) {
          const size_t i = static_cast<size_t>(r * k + c);
          (*q)[i] = Fp32ToFp8E4M3(w[i] / scale);
          (*deq)[i] = Fp8E4M3ToFp32((*q)[i]) * scale;
        }
      }
    }
  }
}

// awq-int4 of w [n, k]: qweight [k, n/8], qzeros [k/g, n/8], fp16 scales
// [k/g, n], and the dequantized values [n, k].
void QuantizeAwq(const std::vector<float>& w, int64_t n, int64_t k, int64_t g,
                 std::vector<int32_t>* qweight, std::vector<int32_t>* qzeros,
                 std::vector<uint16_t>* scales, std::vector<float>* deq) {
  const int64_t groups = k / g, words = n / 8;
  qweight->assign(static_cast<size_t>(k * words), 0);
  qzeros->assign(static_cast<size_t>(groups * words), 0);
  scales->assign(static_cast<size_t>(groups * n), 0);
  deq->assign(static_cast<size_t>(n * k), 0.0f);
  for (int64_t col = 0; col < n; ++col) {
    const int64_t j = col / 8;
    const int shift = 4 * kAwqOrder[col % 8];
    for (int64_t gi = 0; gi < groups; ++gi) {
      float lo = w[static_cast<size_t>(col * k + gi * g)], hi = lo;
      for (int64_t c = gi * g; c < (gi + 1) * g; ++c) {
        lo = std::min(lo, w[static_cast<size_t>(col * k + c)]);
        hi = std::max(hi, w[static_cast<size_t>(col * k + c)]);
      }
      const uint16_t s16 = Fp32ToFp16(hi > lo ? (hi - lo) / 15.0f : 1.0f);
      const float s = Fp16ToFp32(s16);
      const int zero = std::clamp(static_cast<int>(std::nearbyint(-lo / s)), 0, 15);
      (*scales)[static_cast<size_t>(gi * n + col)] = s16;
      auto& zw = (*qzeros)[static_cast<size_t>(gi * words + j)];
      zw = static_cast<int32_t>(static_cast<uint32_t>(zw) | (static_cast<uint32_t>(zero) << shift));
      for (int64_t c = gi * g; c < (gi + 1) * g; ++c) {
        const float v = w[static_cast<size_t>(col * k + c)];
        const int q = std::clamp(static_cast<int>(std::nearbyint(v / s)) + zero, 0, 15);
        auto& qw = (*qweight)[static_cast<size_t>(c * words + j)];
        qw = static_cast<int32_t>(static_cast<uint32_t>(qw) | (static_cast<uint32_t>(q) << shift));
        (*deq)[static_cast<size_t>(col * k + c)] = static_cast<float>(q - zero) * s;
      }
    }
  }
}

}  // namespace

uint8_t Fp32ToFp8E4M3(float v) {
  if (std::isnan(v)) return 0x7f;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  const float a = std::min(std::fabs(v), kFp8Max);
  // Nearest of the 127 finite magnitudes (codes 0x00..0x7e), ties to the even
  // code; they are ascending in the code.
  int best = 0;
  float best_err = a;
  for (int c = 1; c <= 0x7e; ++c) {
    const float err = std::fabs(Fp8E4M3ToFp32(static_cast<uint8_t>(c)) - a);
    if (err < best_err || (err == best_err && c % 2 == 0 && best % 2 == 1)) {
      best = c;
      best_err = err;
    }
  }
  return static_cast<uint8_t>(sign | best);
}

absl::Status QuantizeModel(const std::string& src_dir, const std::string& out_dir,
                           QuantFormat format, QuantizedPair* out,
                           const std::string& config_patch) {
  std::ifstream in(fs::path(src_dir) / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  nlohmann::json quant;
  if (format == QuantFormat::kFp8Block) {
    quant = {{"quant_method", "fp8"},
             {"fmt", "e4m3"},
             {"activation_scheme", "dynamic"},
             {"weight_block_size", {kFp8Block[0], kFp8Block[1]}}};
  } else {
    quant = {{"quant_method", "awq"},
             {"bits", 4},
             {"group_size", kAwqGroup},
             {"zero_point", true},
             {"version", "gemm"}};
  }
  quant.update(nlohmann::json::parse(config_patch));
  out->quantized_dir = (fs::path(out_dir) / "quantized").string();
  out->twin_dir = (fs::path(out_dir) / "twin").string();
  fs::create_directories(out->quantized_dir);
  fs::create_directories(out->twin_dir);
  nlohmann::json qconfig = config;
  qconfig["quantization_config"] = quant;
  RETURN_IF_ERROR(WriteJson(fs::path(out->quantized_dir) / "config.json", qconfig));
  nlohmann::json twin = config;
  twin["torch_dtype"] = "float32";
  twin["dtype"] = "float32";
  RETURN_IF_ERROR(WriteJson(fs::path(out->twin_dir) / "config.json", twin));
  for (const char* extra : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    if (fs::exists(fs::path(src_dir) / extra)) {
      fs::copy_file(fs::path(src_dir) / extra, fs::path(out->quantized_dir) / extra,
                    fs::copy_options::overwrite_existing);
      fs::copy_file(fs::path(src_dir) / extra, fs::path(out->twin_dir) / extra,
                    fs::copy_options::overwrite_existing);
    }
  }

  ASSIGN_OR_RETURN(ModelDescription desc, LoadModelConfig(out->quantized_dir));
  // Source weight name -> the quantized layer's spec.
  std::map<std::string, TensorSpec> quantized;
  for (const TensorSpec& spec : ExpectedTensors(desc)) {
    if (spec.part != LinearPart::kWeight || spec.linear.format == WeightFormat::kUnquantized) {
      continue;
    }
    std::string module = spec.name.substr(0, spec.name.rfind('.'));
    quantized.emplace(module + ".weight", spec);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<safetensors::SafetensorsCheckpoint> src,
                   safetensors::SafetensorsCheckpoint::Open(src_dir));
  std::vector<safetensors::TensorToWrite> qt, tt;
  for (const std::string& name : src->TensorNames()) {
    const safetensors::TensorInfo* info = src->Find(name);
    ASSIGN_OR_RETURN(absl::Span<const uint8_t> data, src->Data(name));
    const int64_t numel = info->num_elements();
    std::vector<float> f32(static_cast<size_t>(numel));
    RETURN_IF_ERROR(
        ConvertElements(data.data(), info->dtype, f32.data(), DataType::kFloat32, numel));
    auto it = quantized.find(name);
    if (it == quantized.end()) {
      qt.push_back({name, info->dtype, info->shape, Bytes(data.data(), data.size())});
      tt.push_back(F32Tensor(name, info->shape, f32));
      continue;
    }
    const TensorSpec& spec = it->second;
    const int64_t n = spec.linear.out_features, k = spec.linear.in_features;
    const std::string module = name.substr(0, name.rfind('.'));
    std::vector<float> deq;
    if (spec.linear.format == WeightFormat::kFp8Block) {
      std::vector<uint8_t> q;
      std::vector<float> scales;
      const int64_t bn = spec.linear.block_shape[0], bk = spec.linear.block_shape[1];
      QuantizeFp8(f32, n, k, bn, bk, &q, &scales, &deq);
      qt.push_back({name, DataType::kFloat8E4M3, {n, k}, Bytes(q.data(), q.size())});
      qt.push_back(
          F32Tensor(module + ".weight_scale_inv", {(n + bn - 1) / bn, (k + bk - 1) / bk}, scales));
    } else {
      std::vector<int32_t> qweight, qzeros;
      std::vector<uint16_t> scales;
      const int64_t g = spec.linear.group_size;
      QuantizeAwq(f32, n, k, g, &qweight, &qzeros, &scales, &deq);
      qt.push_back({module + ".qweight",
                    DataType::kInt32,
                    {k, n / 8},
                    Bytes(qweight.data(), qweight.size() * 4)});
      qt.push_back({module + ".qzeros",
                    DataType::kInt32,
                    {k / g, n / 8},
                    Bytes(qzeros.data(), qzeros.size() * 4)});
      qt.push_back({module + ".scales",
                    DataType::kFloat16,
                    {k / g, n},
                    Bytes(scales.data(), scales.size() * 2)});
    }
    tt.push_back(F32Tensor(name, info->shape, deq));
  }
  RETURN_IF_ERROR(safetensors::WriteSafetensors(
      (fs::path(out->quantized_dir) / "model.safetensors").string(), qt));
  return safetensors::WriteSafetensors((fs::path(out->twin_dir) / "model.safetensors").string(),
                                       tt);
}

}  // namespace epserve::testing
