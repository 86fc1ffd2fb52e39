#include "worker/models/decoder_model.h"

#include <algorithm>
#include <optional>
#include <string>

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
  if (static_cast<int>(desc.layers.size()) != desc.num_layers) {
    return absl::InvalidArgumentError("model: layers does not match num_hidden_layers");
  }
  const auto refuse = [&desc](const absl::Status& s) {
    return absl::Status(s.code(),
                        absl::StrCat(desc.config_file, ": ", desc.architecture, ": ", s.message()));
  };
  for (int i = 0; i < desc.num_layers; ++i) {
    const FeedForwardSpec& ff = desc.layers[i].feed_forward;
    if (!ff.is_moe()) continue;
    if (std::optional<UnsupportedRoutingField> f = FindUnsupportedRouting(ff.routing)) {
      return refuse(absl::UnimplementedError(
          absl::StrCat("layer ", i, ": routing.", f->field, ": expected ", f->expected, ", found ",
                       f->found, " (not supported by the backends)")));
    }
  }
  std::unique_ptr<DecoderModel> m(new DecoderModel(desc, backend));
  ASSIGN_OR_RETURN(m->tensors_, BindModelTensors(desc, weights, backend));
  const float eps = static_cast<float>(desc.rms_norm_eps);
  for (int i = 0; i < desc.num_layers; ++i) {
    const LayerSpec& spec = desc.layers[i];
    const DecoderLayerWeights& l = m->tensors_.layers[i];
    absl::StatusOr<std::unique_ptr<Attention>> attention =
        CreateAttention(spec.attention, i, eps, &l.attention);
    if (!attention.ok()) return refuse(attention.status());
    m->attention_.push_back(*std::move(attention));
    m->moe_.push_back(spec.feed_forward.is_moe()
                          ? std::make_unique<moe::MoeBlock>(moe::MoeShapeOf(spec.feed_forward), &l.moe)
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

kv_cache::KvCacheShape DecoderModel::kv_cache_shape() const { return KvCacheShapeOf(desc_); }

namespace {

// "(layers, kv heads, head_dim)" when every layer has the same K/V pool,
// else "(layers: pool, pool, ...)".
std::string DescribeKvShape(const kv_cache::KvCacheShape& s) {
  const bool uniform = !s.layers.empty() && s.layers[0].kind == kv_cache::KvPoolKind::kKeyValue &&
                       std::all_of(s.layers.begin(), s.layers.end(),
                                   [&](const kv_cache::KvPoolSpec& l) { return l == s.layers[0]; });
  if (uniform) {
    return absl::StrCat("(", s.num_layers(), ", ", s.layers[0].num_kv_heads, ", ",
                        s.layers[0].head_dim, ")");
  }
  std::string out = absl::StrCat("(", s.num_layers(), ":");
  for (const kv_cache::KvPoolSpec& l : s.layers) absl::StrAppend(&out, " ", l.ToString());
  return out + ")";
}

}  // namespace

absl::StatusOr<StepBatch> DecoderModel::PrepareBatch(const StepInput& input,
                                                     kv_cache::KvCache& cache) const {
  const kv_cache::KvCacheShape want = kv_cache_shape();
  if (!(cache.shape() == want)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Forward: KV cache shape (layers, kv heads, head_dim): expected ",
                     DescribeKvShape(want), ", found ", DescribeKvShape(cache.shape())));
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
    RETURN_IF_ERROR(attention_[i]->Forward(b, batch, x, cache.pool(i), &f));
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
