#include "worker/models/decoder_model.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/models/mlp_block.h"
#include "worker/models/step_batch.h"

namespace epserve::models {

absl::StatusOr<std::unique_ptr<DecoderModel>> DecoderModel::Create(
    const ModelDescription& desc, const weights::ModelWeights& weights, kernels::Backend& backend,
    std::unique_ptr<moe::TokenDispatcher> dispatcher) {
  if (desc.clip_qkv.has_value()) {
    return absl::UnimplementedError(absl::StrCat(
        desc.config_file, ": ", desc.architecture, ": clip_qkv = ", *desc.clip_qkv,
        " is not supported by the forward pass yet (no clamp op)"));
  }
  if (static_cast<int>(desc.layer_kinds.size()) != desc.num_layers) {
    return absl::InvalidArgumentError("model: layer_kinds does not match num_hidden_layers");
  }
  std::unique_ptr<DecoderModel> m(new DecoderModel(desc, backend));
  ASSIGN_OR_RETURN(m->tensors_, BindModelTensors(desc, weights, backend));
  const AttentionShape attention_shape = AttentionShapeOf(desc);
  const moe::MoeShape moe_shape = moe::MoeShapeOf(desc);
  for (int i = 0; i < desc.num_layers; ++i) {
    const DecoderLayerWeights& l = m->tensors_.layers[i];
    m->attention_.emplace_back(attention_shape, &l.attention);
    m->moe_.push_back(desc.layer_kinds[i] == LayerKind::kMoe
                          ? std::make_unique<moe::MoeBlock>(moe_shape, &l.moe)
                          : nullptr);
  }
  m->dispatcher_ = dispatcher ? std::move(dispatcher)
                              : std::make_unique<moe::LocalTokenDispatcher>(backend,
                                                                       desc.moe.num_experts);
  return m;
}

absl::Status DecoderModel::ForwardNoTokens() {
  int moe_layer = 0;
  for (int i = 0; i < desc_.num_layers; ++i) {
    if (moe_[i] == nullptr) continue;
    dispatcher_->SetLayer(moe_layer++);
    RETURN_IF_ERROR(moe_[i]->ForwardNoTokens(backend_, *dispatcher_, desc_.hidden_size));
  }
  return absl::OkStatus();
}

kv_cache::KvCacheShape DecoderModel::kv_cache_shape() const {
  return {desc_.num_layers, desc_.num_kv_heads, desc_.head_dim};
}

absl::StatusOr<StepBatch> DecoderModel::PrepareBatch(const StepInput& input,
                                                     kv_cache::KvCache& cache) const {
  const kv_cache::KvCacheShape want = kv_cache_shape();
  if (cache.num_layers() != want.num_layers || cache.shape().num_kv_heads != want.num_kv_heads ||
      cache.shape().head_dim != want.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Forward: KV cache shape (layers, kv heads, head_dim): expected (", want.num_layers, ", ",
        want.num_kv_heads, ", ", want.head_dim, "), found (", cache.num_layers(), ", ",
        cache.shape().num_kv_heads, ", ", cache.shape().head_dim, ")"));
  }
  StepLimits limits;
  limits.vocab_size = desc_.vocab_size;
  limits.num_blocks = cache.num_blocks();
  limits.block_size = cache.block_size();
  // Mixtral's sliding window is not implemented: refuse contexts it would
  // change (up to the window, attention is the same with or without it).
  if (desc_.sliding_window.has_value()) limits.max_context = *desc_.sliding_window;
  return BuildStepBatch(backend_, input, limits);
}

absl::StatusOr<kernels::Tensor> DecoderModel::Forward(const StepInput& input,
                                                      kv_cache::KvCache& cache) {
  ASSIGN_OR_RETURN(StepBatch batch, PrepareBatch(input, cache));
  ASSIGN_OR_RETURN(kernels::Tensor logits,
                   backend_.Empty(DataType::kFloat32, {batch.num_logit_rows, desc_.vocab_size}));
  RETURN_IF_ERROR(ForwardBatch(batch, cache, &logits));
  return logits;
}

absl::Status DecoderModel::ForwardBatch(const StepBatch& batch, kv_cache::KvCache& cache,
                                        kernels::Tensor* logits) {
  kernels::Backend& b = backend_;
  const int64_t t = batch.num_tokens;
  const int64_t h = desc_.hidden_size;
  const float eps = static_cast<float>(desc_.rms_norm_eps);
  ASSIGN_OR_RETURN(kernels::Tensor residual, b.Empty(DataType::kFloat32, {t, h}));
  ASSIGN_OR_RETURN(kernels::Tensor x, b.Empty(DataType::kFloat32, {t, h}));
  ASSIGN_OR_RETURN(kernels::Tensor f, b.Empty(DataType::kFloat32, {t, h}));
  RETURN_IF_ERROR(b.Embedding(batch.token_ids, tensors_.embedding, &residual));

  int moe_layer = 0;
  for (int i = 0; i < desc_.num_layers; ++i) {
    const DecoderLayerWeights& l = tensors_.layers[i];
    if (i == 0) {
      RETURN_IF_ERROR(b.RmsNorm(residual, l.input_norm, eps, &x));
    } else {
      RETURN_IF_ERROR(b.AddRmsNorm(f, &residual, l.input_norm, eps, &x));
    }
    RETURN_IF_ERROR(attention_[i].Forward(b, batch, x, cache.k(i), cache.v(i), &f));
    RETURN_IF_ERROR(b.AddRmsNorm(f, &residual, l.post_attn_norm, eps, &x));
    if (moe_[i] != nullptr) {
      dispatcher_->SetLayer(moe_layer++);
      RETURN_IF_ERROR(moe_[i]->Forward(b, *dispatcher_, x, &f));
    } else {
      RETURN_IF_ERROR(DenseMlpForward(b, l.mlp, x, &f));
    }
  }
  RETURN_IF_ERROR(b.AddRmsNorm(f, &residual, tensors_.final_norm, eps, &x));

  // Gather the rows that want logits (Embedding over the hidden rows is a
  // row gather), then the lm_head GEMM on those rows only.
  const int64_t r = batch.num_logit_rows;
  if (r > 0) {
    ASSIGN_OR_RETURN(kernels::Tensor selected, b.Empty(DataType::kFloat32, {r, h}));
    RETURN_IF_ERROR(b.Embedding(batch.logit_rows, x, &selected));
    RETURN_IF_ERROR(b.MatMul(selected, tensors_.lm_head, /*bias=*/{}, logits));
  }
  return absl::OkStatus();
}

}  // namespace epserve::models
