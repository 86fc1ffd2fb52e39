// One decoder-only transformer for every supported architecture, composed
// layer by layer from ModelDescription::layers and written only against
// kernels::Backend:
//
//   ids ─Embedding─► residual [T,H]
//   per layer i:  x = RmsNorm(residual, input_norm)            (AddRmsNorm after layer 0)
//                 a = Attention(x, pool i)  (CreateAttention(layers[i].attention))
//                 residual += a; x = RmsNorm(residual, post_attn_norm)
//                 f = Mlp(x) | Moe(x)       (layers[i].feed_forward.kind)
//   residual += f; x = RmsNorm(residual, final_norm)
//   logits [R,V] = lm_head · x[logit_rows]   (lm_head = embedding when tied)
//
// Activations are allocated per step through the backend (no arena yet).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/attention/attention.h"
#include "worker/models/model_tensors.h"
#include "worker/moe/moe_block.h"
#include "worker/models/step_batch.h"
#include "worker/models/step_input.h"
#include "worker/moe/token_dispatcher.h"
#include "worker/weights/weight_loader.h"

namespace epserve::models {

class DecoderModel {
 public:
  // Binds `weights` (the tensors are shared, not copied) to a model on
  // `backend`, which must outlive it. `dispatcher` null: a
  // LocalTokenDispatcher (world size 1, every expert local). Refuses what the
  // forward pass does not implement (OLMoE clip_qkv, a layer's attention kind
  // or routing the backends do not run) with UNIMPLEMENTED naming it.
  static absl::StatusOr<std::unique_ptr<DecoderModel>> Create(
      const ModelDescription& desc, const weights::ModelWeights& weights,
      kernels::Backend& backend, std::unique_ptr<moe::TokenDispatcher> dispatcher = nullptr);

  // The pools a KvCache for this model must have (KvCacheShapeOf(desc)).
  kv_cache::KvCacheShape kv_cache_shape() const;
  const ModelDescription& desc() const { return desc_; }
  kernels::Backend& backend() const { return backend_; }

  // Runs one step; the new tokens' K/V are written to `cache` at the slots
  // their block tables give. Returns float32 logits [R, vocab], one row per
  // token asked for (StepSequence::logits), in batch order.
  absl::StatusOr<kernels::Tensor> Forward(const StepInput& input, kv_cache::KvCache& cache);

  // Forward in two parts, for callers that keep the step's device buffers
  // (graph replay): PrepareBatch validates `input` against the cache and the
  // model and builds its device tensors; ForwardBatch runs the layers,
  // writing the logits rows into `logits` ([batch.num_logit_rows, vocab]
  // float32, preallocated). ForwardBatch enqueues device work only (no host
  // synchronisation), so it can be captured into a graph.
  absl::StatusOr<StepBatch> PrepareBatch(const StepInput& input, kv_cache::KvCache& cache) const;
  absl::Status ForwardBatch(const StepBatch& batch, kv_cache::KvCache& cache,
                            kernels::Tensor* logits);
  // Whether ForwardBatch may ever be captured into a graph (every expert is
  // local, or the expert-parallel exchange can be enqueued on the device in
  // some steps), and whether this step's may (see TokenDispatcher).
  bool capturable() const { return dispatcher_->supports_graphs(); }
  bool step_capturable() const { return dispatcher_->step_capturable(); }

  // Expert parallelism, a step in which this rank has no tokens: every MoE
  // layer's dispatch, local experts and combine run with zero local rows, in
  // layer order, so that the collectives of the ranks that do have tokens
  // complete. Nothing else runs.
  absl::Status ForwardNoTokens();

  moe::TokenDispatcher& dispatcher() { return *dispatcher_; }

 private:
  DecoderModel(const ModelDescription& desc, kernels::Backend& backend)
      : desc_(desc), backend_(backend) {}

  ModelDescription desc_;
  kernels::Backend& backend_;
  ModelTensors tensors_;
  std::vector<std::unique_ptr<Attention>> attention_;
  std::vector<std::unique_ptr<moe::MoeBlock>> moe_;  // null for dense layers
  std::unique_ptr<moe::TokenDispatcher> dispatcher_;
};

}  // namespace epserve::models
