#include "worker/models/attention_block.h"

#include "common/status.h"

namespace epserve::models {

kernels::RopeConfig ToKernelRope(const RopeParams& rope) {
  kernels::RopeConfig c;
  switch (rope.type) {
    case RopeType::kDefault: c.type = kernels::RopeType::kDefault; break;
    case RopeType::kLinear: c.type = kernels::RopeType::kLinear; break;
    case RopeType::kLlama3: c.type = kernels::RopeType::kLlama3; break;
    case RopeType::kYarn: c.type = kernels::RopeType::kYarn; break;
  }
  c.layout = rope.neox_layout ? kernels::RopeLayout::kNeox : kernels::RopeLayout::kInterleaved;
  c.theta = rope.theta;
  c.factor = rope.factor;
  c.low_freq_factor = rope.low_freq_factor;
  c.high_freq_factor = rope.high_freq_factor;
  c.original_max_position_embeddings = rope.original_max_position_embeddings;
  c.beta_fast = rope.beta_fast;
  c.beta_slow = rope.beta_slow;
  c.mscale = rope.mscale.value_or(0.0);
  c.mscale_all_dim = rope.mscale_all_dim.value_or(0.0);
  c.attention_factor = rope.attention_factor.value_or(0.0);
  return c;
}

AttentionShape AttentionShapeOf(const ModelDescription& desc) {
  AttentionShape s;
  s.num_heads = desc.num_heads;
  s.num_kv_heads = desc.num_kv_heads;
  s.head_dim = desc.head_dim;
  s.qk_norm = desc.qk_norm;
  s.norm_eps = static_cast<float>(desc.rms_norm_eps);
  s.rope = ToKernelRope(desc.rope);
  return s;
}

absl::Status AttentionBlock::Forward(kernels::Backend& backend, const StepBatch& batch,
                                     const kernels::Tensor& x, kernels::Tensor* k_cache,
                                     kernels::Tensor* v_cache, kernels::Tensor* out) const {
  const int64_t t = batch.num_tokens;
  const int64_t q_width = shape_.num_heads * shape_.head_dim;
  const int64_t kv_width = shape_.num_kv_heads * shape_.head_dim;
  ASSIGN_OR_RETURN(kernels::Tensor q, backend.Empty(DataType::kFloat32, {t, q_width}));
  ASSIGN_OR_RETURN(kernels::Tensor k, backend.Empty(DataType::kFloat32, {t, kv_width}));
  ASSIGN_OR_RETURN(kernels::Tensor v, backend.Empty(DataType::kFloat32, {t, kv_width}));
  const kernels::LinearWeight* ws[] = {&w_->q_proj, &w_->k_proj, &w_->v_proj};
  const kernels::Tensor* biases[] = {&w_->q_bias, &w_->k_bias, &w_->v_bias};
  kernels::Tensor* ys[] = {&q, &k, &v};
  RETURN_IF_ERROR(backend.MatMulShared(x, ws, biases, ys));
  if (shape_.qk_norm == QkNormKind::kFull) {  // OLMoE: one norm across all heads
    RETURN_IF_ERROR(backend.RmsNorm(q, w_->q_norm, shape_.norm_eps, &q));
    RETURN_IF_ERROR(backend.RmsNorm(k, w_->k_norm, shape_.norm_eps, &k));
  }
  // Per-head q/k norm (Qwen3: [D] weight on every head), rope and the cache
  // write in one op (one kernel on a GPU).
  kernels::AttentionPrologueArgs prologue;
  prologue.q = &q;
  prologue.k = &k;
  prologue.v = &v;
  if (shape_.qk_norm == QkNormKind::kPerHead) {
    prologue.q_norm = &w_->q_norm;
    prologue.k_norm = &w_->k_norm;
  }
  prologue.norm_eps = shape_.norm_eps;
  prologue.rope = shape_.rope;
  prologue.head_dim = shape_.head_dim;
  prologue.positions = &batch.positions;
  prologue.slot_mapping = &batch.slot_mapping;
  prologue.k_cache = k_cache;
  prologue.v_cache = v_cache;
  RETURN_IF_ERROR(backend.AttentionPrologue(prologue));

  ASSIGN_OR_RETURN(kernels::Tensor attn, backend.Empty(DataType::kFloat32, {t, q_width}));
  kernels::PagedAttentionArgs args;
  args.q = &q;
  args.k_cache = k_cache;
  args.v_cache = v_cache;
  args.metadata = &batch.attention;
  args.num_q_heads = shape_.num_heads;
  args.scale = 0.0f;  // 1/sqrt(D), as transformers' head_dim**-0.5
  RETURN_IF_ERROR(backend.PagedAttention(args, &attn));
  return backend.MatMul(attn, w_->o_proj, w_->o_bias, out);
}

}  // namespace epserve::models
