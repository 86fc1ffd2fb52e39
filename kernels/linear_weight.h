// LinearWeight: the weight of one linear layer (nn.Linear, y = x · W^T) in
// its storage format, as the linear ops of kernels::Backend take it (MatMul,
// MatMulShared, GroupedExpertMatMul, GroupedExpertGateUp; ops.h).
//
// Per format (WeightFormat, common/weight_format.h), with N out-features and
// K in-features:
//
//   format        weight                  scales                   zero_points        group_size
//   block_shape kUnquantized  [N, K] f32 / bf16 / f16  undefined                undefined 0 {0, 0}
//   kFp8Block     [N, K] f8e4m3            [ceil(N/bn), ceil(K/bk)]  undefined          0 {bn, bk}
//                                          f32
//   kAwqInt4      [K, N/8] i32 (qweight)   [K/g, N] f16             [K/g, N/8] i32     g {0, 0}
//
// AWQ packs output features n = 8j + i of row k into qweight[k, j], nibble
// position p(i) = {0, 4, 1, 5, 2, 6, 3, 7}[i] (bits 4p..4p+3); qzeros the
// same per group. Dequantized: fp8 x scales[n / bn, k / bk]; (q - z) x
// scales[k / g, n].
//
// Contract for the formats to come: every tensor of a layer lives in one of
// these fields (a format that needs none of scales / zero_points leaves them
// undefined); `group_size` (input features sharing one scale) and
// `block_shape` ({out, in} elements sharing one scale) are 0 where the format
// has no such granularity; out_features() / in_features() are the logical
// N and K whatever the packing of `weight`. Who builds and who reads a
// LinearWeight never branches on the format except the op-boundary checks
// (ops.cc) and the backends' kernels. The tensors are shared handles: copies
// of a LinearWeight share storage.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "common/weight_format.h"
#include "kernels/tensor.h"

namespace epserve::kernels {

struct LinearWeight {
  WeightFormat format = WeightFormat::kUnquantized;
  Tensor weight;           // the layer's data (see the table above)
  Tensor scales;           // dequantisation scales; undefined when the format has none
  Tensor zero_points;      // zero points; undefined when the format has none
  int64_t group_size = 0;  // 0: no per-group scales
  std::array<int64_t, 2> block_shape = {0, 0};  // {out, in}; {0, 0}: no block scales

  // An unquantized layer: `weight` [N, K] (may be undefined: no layer).
  static LinearWeight Unquantized(Tensor weight) {
    LinearWeight w;
    w.weight = std::move(weight);
    return w;
  }

  // Whether this layer is present (an undefined LinearWeight marks a layer
  // the model does not have or an expert this worker does not hold).
  bool defined() const { return weight.defined(); }

  // N, the layer's output features. Requires a defined weight of the rank its
  // format stores.
  int64_t out_features() const {
    switch (format) {
      case WeightFormat::kUnquantized:
      case WeightFormat::kFp8Block:
        return weight.shape[0];
      case WeightFormat::kAwqInt4:
        return weight.shape[1] * 8;
    }
    return 0;
  }
  // K, the layer's input features (the width of x). Same requirement.
  int64_t in_features() const {
    switch (format) {
      case WeightFormat::kUnquantized:
      case WeightFormat::kFp8Block:
        return weight.shape[1];
      case WeightFormat::kAwqInt4:
        return weight.shape[0];
    }
    return 0;
  }
};

}  // namespace epserve::kernels
