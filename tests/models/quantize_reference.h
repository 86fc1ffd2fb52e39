// Reference quantizers for the test checkpoints, written from the formats'
// specifications (kernels/linear_weight.h): a float32 model directory in,
// a quantized one and its exactly dequantized float32 twin out.
//
//   fp8-block (quant_method fp8, weight_block_size [bn, bk], fmt e4m3):
//     per block, scale = amax / 448 (1 for an all-zero block); weight =
//     the e4m3fn nearest to w / scale (ties to even, saturating at 448);
//     weight_scale_inv = scale. Dequantized: float(fp8) * scale.
//   awq-int4 (quant_method awq, bits 4, group_size g, zero_point, gemm):
//     per output feature and group of g inputs, scale = fp16((max - min) / 15)
//     (1 when max == min), zero = clamp(round(-min / scale), 0, 15),
//     q = clamp(round(w / scale) + zero, 0, 15), packed eight outputs per
//     int32 in the order 0 4 1 5 2 6 3 7. Dequantized: float(q - zero) *
//     float(scale).
//
// Which layers are quantized is the model's own rule (ExpectedTensors of the
// quantized config): the router gate, lm_head and modules_to_not_convert
// stay as they are.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace epserve::testing {

enum class QuantFormat { kFp8Block, kAwqInt4 };

struct QuantizedPair {
  std::string quantized_dir;  // config.json with quantization_config + model.safetensors
  std::string twin_dir;       // float32, the dequantized values of every quantized layer
};

// Reads `src_dir` (config.json, model.safetensors in float32 / bfloat16) and
// writes both directories under `out_dir`. `config_patch`: extra keys merged
// into quantization_config (e.g. modules_to_not_convert).
absl::Status QuantizeModel(const std::string& src_dir, const std::string& out_dir,
                           QuantFormat format, QuantizedPair* out,
                           const std::string& config_patch = "{}");

// The e4m3fn byte nearest to `v` (ties to even), saturating at +-448.
uint8_t Fp32ToFp8E4M3(float v);

}  // namespace epserve::testing
