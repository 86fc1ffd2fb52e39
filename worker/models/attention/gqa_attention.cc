#include "worker/models/attention/gqa_attention.h"

#include "common/status.h"

namespace epserve::models {

absl::Status GqaAttention::Forward(kernels::Backend& backend, const StepBatch& batch,
                                   const kernels::Tensor& x, kv_cache::KvPool& pool,
                                   kernels::Tensor* out) const {
  kernels::Tensor* k_cache = &pool.k;
  kernels::Tensor* v_cache = &pool.v;
  const int64_t t = batch.num_tokens;
  const int64_t q_width = spec_.num_heads * spec_.head_dim;
  const int64_t kv_width = spec_.num_kv_heads * spec_.head_dim;
  ASSIGN_OR_RETURN(kernels::Tensor q, backend.Empty(DataType::kFloat32, {t, q_width}));
  ASSIGN_OR_RETURN(kernels::Tensor k, backend.Empty(DataType::kFloat32, {t, kv_width}));
  ASSIGN_OR_RETURN(kernels::Tensor v, backend.Empty(DataType::kFloat32, {t, kv_width}));
  const kernels::LinearWeight* ws[] = {&w_->q_proj, &w_->k_proj, &w_->v_proj};
  const kernels::Tensor* biases[] = {&w_->q_bias, &w_->k_bias, &w_->v_bias};
  kernels::Tensor* ys[] = {&q, &k, &v};
  RETURN_IF_ERROR(backend.MatMulShared(x, ws, biases, ys));
  if (spec_.qk_norm == QkNormKind::kFull) {  // OLMoE: one norm across all heads
    RETURN_IF_ERROR(backend.RmsNorm(q, w_->q_norm, norm_eps_, &q));
    RETURN_IF_ERROR(backend.RmsNorm(k, w_->k_norm, norm_eps_, &k));
  }
  // Per-head q/k norm (Qwen3: [D] weight on every head), rope and the cache
  // write in one op (one kernel on a GPU).
  kernels::AttentionPrologueArgs prologue;
  prologue.q = &q;
  prologue.k = &k;
  prologue.v = &v;
  if (spec_.qk_norm == QkNormKind::kPerHead) {
    prologue.q_norm = &w_->q_norm;
    prologue.k_norm = &w_->k_norm;
  }
  prologue.norm_eps = norm_eps_;
  prologue.rope = spec_.rope;
  prologue.head_dim = spec_.head_dim;
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
  args.num_q_heads = spec_.num_heads;
  args.scale = 0.0f;  // 1/sqrt(D), as transformers' head_dim**-0.5
  RETURN_IF_ERROR(backend.PagedAttention(args, &attn));
  return backend.MatMul(attn, w_->o_proj, w_->o_bias, out);
}

}  // namespace epserve::models
