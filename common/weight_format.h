// How a linear layer's weight is stored (WeightFormat) and which linear op of
// kernels::Backend runs it (LinearOp). Plain enums with no kernels dependency,
// so that model specs (common/model_config/tensor_spec.h), the router's config
// checks and the kernels share one vocabulary.
//
// Adding a format (the contract every format follows):
//  * a value here and its name in WeightFormatName;
//  * the tensors it consists of, in kernels::LinearWeight's fields (weight,
//    scales, zero_points, group_size, block_shape) and its feature counts in
//    LinearWeight::out_features / in_features (kernels/linear_weight.h);
//  * the checkpoint tensors of a layer in that format (TensorSpec's LinearSpec
//    and companion entries, common/model_config/tensor_spec.*);
//  * its op-boundary checks (kernels/ops.cc) and the backends' kernels, each
//    backend answering Backend::Supports(op, format) for the ops it runs.
// Model code (worker/models) holds LinearWeights and never names a format.
#pragma once

namespace epserve {

enum class WeightFormat {
  kUnquantized,  // weight [N, K] float32 / bfloat16 / float16; no scales, no zero points
  // FP8 block-wise (quant_method fp8 with weight_block_size, e.g. Qwen3-FP8,
  // DeepSeek-V3): weight [N, K] float8_e4m3fn, scales [ceil(N/bn), ceil(K/bk)]
  // float32 (the checkpoint's weight_scale_inv); value = fp8 x scale of its block.
  kFp8Block,
  // AWQ int4 GEMM layout (quant_method awq, bits 4, zero_point): weight =
  // qweight [K, N/8] int32, zero_points = qzeros [K/g, N/8] int32, scales
  // [K/g, N] float16; eight 4-bit values per int32 in the order 0 4 1 5 2 6 3 7;
  // value = (q - z) x scale of its group of g input features.
  kAwqInt4,
};

// "unquantized", "fp8-block", "awq-int4".
inline const char* WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kUnquantized:
      return "unquantized";
    case WeightFormat::kFp8Block:
      return "fp8-block";
    case WeightFormat::kAwqInt4:
      return "awq-int4";
  }
  return "?";
}

// The ops of kernels::Backend (kernels/ops.h) that take a LinearWeight.
enum class LinearOp {
  kMatMul,               // y = x · w^T (+ bias)
  kMatMulShared,         // up to 4 MatMuls reading the same x (q, k, v projections)
  kGroupedExpertMatMul,  // per-expert x · w[e]^T over expert-grouped rows
  kGroupedExpertGateUp,  // per-expert silu(x · gate[e]^T) * (x · up[e]^T)
};

// "MatMul", "MatMulShared", "GroupedExpertMatMul", "GroupedExpertGateUp".
inline const char* LinearOpName(LinearOp op) {
  switch (op) {
    case LinearOp::kMatMul:
      return "MatMul";
    case LinearOp::kMatMulShared:
      return "MatMulShared";
    case LinearOp::kGroupedExpertMatMul:
      return "GroupedExpertMatMul";
    case LinearOp::kGroupedExpertGateUp:
      return "GroupedExpertGateUp";
  }
  return "?";
}

}  // namespace epserve
