// CudaBackend ops other than the GEMMs: each checks what only this backend
// needs (int32 ranges, supported element types), then calls its launcher.
// Shapes were checked at the op boundary (kernels/ops.cc).
#include <cuda_runtime.h>

#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_prologue.cuh"
#include "kernels/cuda/copy_rows.cuh"
#include "kernels/cuda/cuda_backend_impl.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/ep_exchange.cuh"
#include "kernels/cuda/grouped_gemm.cuh"
#include "kernels/cuda/moe.cuh"

namespace epserve::kernels::cuda {

absl::Status CudaBackend::EmbeddingImpl(const Tensor& ids, const Tensor& table, Tensor* out) {
  ASSIGN_OR_RETURN(Elem elem, ElemOf(table.dtype));
  return cuda::Embedding(ids.data_as<int32_t>(), ids.shape[0], table.data(), elem, table.shape[0],
                   table.shape[1], out->mutable_data_as<float>(), errors_, s());
}

absl::Status CudaBackend::RmsNormImpl(const Tensor& x, Tensor* residual, const Tensor& w,
                                      float eps, Tensor* y) {
  return cuda::RmsNorm(x.data_as<float>(), residual ? residual->mutable_data_as<float>() : nullptr,
                 w.data_as<float>(), eps, x.shape[0], x.shape[1], y->mutable_data_as<float>(),
                 s());
}

absl::Status CudaBackend::HeadRmsNormImpl(Tensor* x, const Tensor& w, float eps) {
  const int64_t d = w.shape[0];
  return cuda::HeadRmsNorm(x->mutable_data_as<float>(), w.data_as<float>(), eps, x->numel() / d, d,
                     s());
}

absl::StatusOr<const float*> CudaBackend::DeviceInvFreq(const std::vector<float>& inv_freq) {
  auto it = inv_freq_cache_.find(inv_freq);
  if (it != inv_freq_cache_.end()) return static_cast<const float*>(it->second->data());
  if (ctx_->capturing) {
    return absl::FailedPreconditionError(
        "Rope: a new rope table during graph capture (run the step once before capturing)");
  }
  ASSIGN_OR_RETURN(Tensor t, Empty(DataType::kFloat32, {static_cast<int64_t>(inv_freq.size())}));
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(t.mutable_data(), inv_freq.data(),
                                       inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice,
                                       s()));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s()));
  inv_freq_cache_[inv_freq] = t.storage;
  return static_cast<const float*>(t.storage->data());
}

absl::Status CudaBackend::RopeImpl(const RopeFrequencies& freqs, RopeLayout layout,
                                   int64_t head_dim, const Tensor& positions, Tensor* q,
                                   Tensor* k) {
  if (positions.shape[0] == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(const float* inv, DeviceInvFreq(freqs.inv_freq));
  return cuda::Rope(inv, freqs.attention_factor, layout == RopeLayout::kNeox, head_dim,
              positions.data_as<int32_t>(), positions.shape[0], q->mutable_data_as<float>(),
              q->shape[1] / head_dim, k->mutable_data_as<float>(), k->shape[1] / head_dim,
              errors_, s());
}

absl::Status CudaBackend::SiluAndMulImpl(const Tensor& gate, const Tensor* up, Tensor* out) {
  return cuda::SiluAndMul(gate.data_as<float>(), up ? up->data_as<float>() : nullptr, out->shape[0],
                    out->shape[1], out->mutable_data_as<float>(), s());
}

absl::Status CudaBackend::AddImpl(const Tensor& a, const Tensor& b, Tensor* out) {
  return cuda::Add(a.data_as<float>(), b.data_as<float>(), a.numel(), out->mutable_data_as<float>(),
             s());
}

absl::Status CudaBackend::SigmoidGateMulAddImpl(const Tensor& gate_logit, const Tensor& x,
                                                Tensor* out) {
  return cuda::SigmoidGateMulAdd(gate_logit.data_as<float>(), x.data_as<float>(), x.shape[0],
                           x.shape[1], out->mutable_data_as<float>(), s());
}

absl::Status CudaBackend::WriteKvCacheImpl(const Tensor& k, const Tensor& v,
                                           const Tensor& slot_mapping, Tensor* k_cache,
                                           Tensor* v_cache) {
  ASSIGN_OR_RETURN(Elem elem, ElemOf(k_cache->dtype));
  const int64_t num_slots = k_cache->shape[0] * k_cache->shape[1];
  if (num_slots > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKvCache: k_cache: ", num_slots, " slots exceed the int32 slot range"));
  }
  return cuda::WriteKvCache(k.data_as<float>(), v.data_as<float>(), slot_mapping.data_as<int32_t>(),
                      k.shape[0], k.shape[1], num_slots, elem, k_cache->mutable_data(),
                      v_cache->mutable_data(), errors_, s());
}

absl::Status CudaBackend::AttentionPrologueImpl(const AttentionPrologueArgs& args,
                                                const RopeFrequencies& freqs) {
  const Tensor& kc = *args.k_cache;
  AttentionPrologueParams p;
  p.num_tokens = args.positions->shape[0];
  if (p.num_tokens == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(p.cache_type, ElemOf(kc.dtype));
  p.q = args.q->mutable_data_as<float>();
  p.k = args.k->mutable_data_as<float>();
  p.v = args.v->data_as<float>();
  p.q_norm = args.q_norm != nullptr ? args.q_norm->data_as<float>() : nullptr;
  p.k_norm = args.k_norm != nullptr ? args.k_norm->data_as<float>() : nullptr;
  p.eps = args.norm_eps;
  p.attention_factor = freqs.attention_factor;
  p.neox = args.rope.layout == RopeLayout::kNeox;
  p.positions = args.positions->data_as<int32_t>();
  p.slots = args.slot_mapping->data_as<int32_t>();
  p.head_dim = args.head_dim;
  p.q_heads = args.q->shape[1] / args.head_dim;
  p.kv_heads = args.k->shape[1] / args.head_dim;
  p.num_slots = kc.shape[0] * kc.shape[1];
  p.k_cache = args.k_cache->mutable_data();
  p.v_cache = args.v_cache->mutable_data();
  p.errors = errors_;
  // Sizes or alignments the single kernel does not take: the separate
  // kernels (decided from host-known values only, so a captured graph
  // replays the same choice).
  if (!cuda::AttentionPrologueFusable(p)) return Backend::AttentionPrologueImpl(args, freqs);
  if (p.num_slots > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttentionPrologue: k_cache: ", p.num_slots, " slots exceed the int32 slot range"));
  }
  // Uploaded once per rope table, before any capture (as Rope).
  ASSIGN_OR_RETURN(p.inv_freq, DeviceInvFreq(freqs.inv_freq));
  return cuda::AttentionPrologue(p, s());
}

absl::Status CudaBackend::PagedAttentionImpl(const PagedAttentionArgs& args, float scale,
                                             Tensor* out) {
  const Tensor& kc = *args.k_cache;
  const AttentionMetadata& m = *args.metadata;
  PagedAttentionParams p;
  p.q = args.q->data_as<float>();
  p.k_cache = kc.data();
  p.v_cache = args.v_cache->data();
  ASSIGN_OR_RETURN(p.cache_type, ElemOf(kc.dtype));
  p.num_blocks = kc.shape[0];
  p.block_size = kc.shape[1];
  p.num_kv_heads = kc.shape[2];
  p.head_dim = kc.shape[3];
  p.num_q_heads = args.num_q_heads;
  p.query_start = m.query_start.data_as<int32_t>();
  p.context_lens = m.context_lens.data_as<int32_t>();
  p.block_tables = m.block_tables.data_as<int32_t>();
  p.max_blocks_per_seq = m.block_tables.shape[1];
  p.num_seqs = m.context_lens.shape[0];
  p.num_tokens = args.q->shape[0];
  p.scale = scale;
  p.out = out->mutable_data_as<float>();
  p.errors = errors_;
  if (p.num_tokens == 0) return absl::OkStatus();
  const size_t ws = PagedAttentionWorkspaceBytes(p);
  Tensor scratch;
  if (ws > 0) {
    ASSIGN_OR_RETURN(scratch, Scratch(ws));
  }
  return cuda::PagedAttention(p, ws > 0 ? scratch.mutable_data() : nullptr, ws, s());
}

absl::Status CudaBackend::MoeGateImpl(const Tensor& router_logits, const RoutingParams& routing,
                                      Tensor* topk_ids, Tensor* topk_weights) {
  return cuda::MoeGate(router_logits.data_as<float>(), router_logits.shape[0],
                       router_logits.shape[1], routing.top_k, routing.renormalize,
                       topk_ids->mutable_data_as<int32_t>(), topk_weights->mutable_data_as<float>(),
                       s());
}

absl::Status CudaBackend::MoePermuteImpl(const Tensor& hidden, const Tensor& topk_ids,
                                         MoePermutation* out) {
  const int64_t t = hidden.shape[0], k = topk_ids.shape[1], e = out->expert_offsets.shape[0] - 1;
  const size_t ws = MoePermuteWorkspaceBytes(t * k, e);
  Tensor scratch;
  if (ws > 0) {
    ASSIGN_OR_RETURN(scratch, Scratch(ws));
  }
  return cuda::MoePermute(hidden.data_as<float>(), topk_ids.data_as<int32_t>(), t, k, hidden.shape[1],
                    e, out->rows.mutable_data_as<float>(),
                    out->expert_offsets.mutable_data_as<int32_t>(),
                    out->permuted_to_assignment.mutable_data_as<int32_t>(),
                    out->assignment_to_permuted.mutable_data_as<int32_t>(),
                    ws > 0 ? scratch.mutable_data() : nullptr, ws, errors_, s());
}

absl::StatusOr<const void* const*> CudaBackend::DeviceExpertPointers(
    absl::Span<const LinearWeight> weights) {
  std::vector<const void*> ptrs(weights.size(), nullptr);
  for (size_t e = 0; e < weights.size(); ++e) {
    if (weights[e].defined()) ptrs[e] = weights[e].weight.data();
  }
  auto it = expert_ptr_cache_.find(ptrs);
  if (it != expert_ptr_cache_.end()) return static_cast<const void* const*>(it->second->data());
  if (ctx_->capturing) {
    return absl::FailedPreconditionError(
        "GroupedExpertMatMul: new expert weights during graph capture (run the step once "
        "before capturing)");
  }
  ASSIGN_OR_RETURN(Tensor t, Empty(DataType::kUInt64, {static_cast<int64_t>(ptrs.size())}));
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(t.mutable_data(), ptrs.data(),
                                       ptrs.size() * sizeof(void*), cudaMemcpyHostToDevice,
                                       s()));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s()));
  expert_ptr_cache_[ptrs] = t.storage;
  return static_cast<const void* const*>(t.storage->data());
}

absl::StatusOr<DataType> CudaBackend::ExpertDtype(const char* op,
                                                  absl::Span<const LinearWeight> weights) {
  // Every held expert must share one storage type (one kernel instance).
  DataType type = DataType::kFloat32;
  bool any = false;
  for (size_t e = 0; e < weights.size(); ++e) {
    if (!weights[e].defined()) continue;
    const DataType dtype = weights[e].weight.dtype;
    if (any && dtype != type) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": weights[", e, "]: expected dtype ", DataTypeName(type),
                       " like the other experts, found ", DataTypeName(dtype)));
    }
    type = dtype;
    any = true;
  }
  return type;
}

absl::Status CudaBackend::GroupedExpertGateUpImpl(const Tensor& rows, const Tensor& expert_offsets,
                                                  absl::Span<const LinearWeight> gate,
                                                  absl::Span<const LinearWeight> up, Tensor* out) {
  ASSIGN_OR_RETURN(DataType type, ExpertDtype("GroupedExpertGateUp", gate));
  const int64_t r = rows.shape[0], k = rows.shape[1], n = out->shape[1];
  if (r == 0 || n == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(Elem elem, ElemOf(type));
  ASSIGN_OR_RETURN(const void* const* gate_ptrs, DeviceExpertPointers(gate));
  ASSIGN_OR_RETURN(const void* const* up_ptrs, DeviceExpertPointers(up));
  const int64_t e = static_cast<int64_t>(gate.size());
  const size_t ws = GroupedExpertGateUpWorkspaceBytes(r, k, n, e, elem);
  Tensor scratch;
  if (ws > 0) {
    ASSIGN_OR_RETURN(scratch, Scratch(ws));
  }
  return cuda::GroupedExpertGateUp(rows.data_as<float>(), r, k,
                                   expert_offsets.data_as<int32_t>(), e, gate_ptrs, up_ptrs,
                                   elem, n, out->mutable_data_as<float>(),
                                   ws > 0 ? scratch.mutable_data() : nullptr, ws, errors_, s());
}

absl::Status CudaBackend::GroupedExpertMatMulImpl(const Tensor& rows, const Tensor& expert_offsets,
                                                  absl::Span<const LinearWeight> weights,
                                                  Tensor* out) {
  ASSIGN_OR_RETURN(DataType type, ExpertDtype("GroupedExpertMatMul", weights));
  const int64_t r = rows.shape[0], k = rows.shape[1], n = out->shape[1];
  if (r == 0 || n == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(Elem elem, ElemOf(type));
  ASSIGN_OR_RETURN(const void* const* ptrs, DeviceExpertPointers(weights));
  const int64_t e = static_cast<int64_t>(weights.size());
  const size_t ws = GroupedExpertMatMulWorkspaceBytes(r, k, n, e, elem);
  Tensor scratch;
  if (ws > 0) {
    ASSIGN_OR_RETURN(scratch, Scratch(ws));
  }
  return cuda::GroupedExpertMatMul(rows.data_as<float>(), r, k, expert_offsets.data_as<int32_t>(), e,
                             ptrs, elem, n, out->mutable_data_as<float>(),
                             ws > 0 ? scratch.mutable_data() : nullptr, ws, errors_, s());
}

absl::Status CudaBackend::MoeUnpermuteImpl(const Tensor& expert_out, const Tensor& topk_weights,
                                           const MoePermutation& perm, Tensor* out) {
  return cuda::MoeUnpermute(expert_out.data_as<float>(), topk_weights.data_as<float>(),
                      perm.assignment_to_permuted.data_as<int32_t>(), topk_weights.shape[0],
                      topk_weights.shape[1], expert_out.shape[1], out->mutable_data_as<float>(),
                      s());
}

absl::Status CudaBackend::CopyRowsImpl(const Tensor& src, const Tensor& blocks, Tensor* dst) {
  ASSIGN_OR_RETURN(Elem src_type, ElemOf(src.dtype));
  ASSIGN_OR_RETURN(Elem dst_type, ElemOf(dst->dtype));
  return cuda::CopyRows(src.data(), src_type, src.shape[0], blocks.data_as<int32_t>(),
                        blocks.shape[0], src.shape[1], dst->mutable_data(), dst_type,
                        dst->shape[0], errors_, s());
}

// ---- expert-parallel exchange ----

absl::Status CudaBackend::EpDispatchPackImpl(const Tensor& hidden, const Tensor& topk_ids,
                                             const Tensor& topk_weights,
                                             const Tensor& expert_to_rank, Tensor* send_rows,
                                             Tensor* send_routes, Tensor* send_counts,
                                             Tensor* token_slots) {
  ASSIGN_OR_RETURN(Elem wire, ElemOf(send_rows->dtype));
  const int64_t w = send_counts->shape[0];
  return cuda::EpDispatchPack(
      hidden.data_as<float>(), topk_ids.data_as<int32_t>(), topk_weights.data_as<float>(),
      hidden.shape[0], topk_ids.shape[1], hidden.shape[1], expert_to_rank.data_as<int32_t>(),
      expert_to_rank.shape[0], w, send_rows->shape[0] / w, send_rows->mutable_data(), wire,
      send_routes->mutable_data_as<int32_t>(), send_counts->mutable_data_as<int32_t>(),
      token_slots->mutable_data_as<int32_t>(), errors_, s());
}

absl::Status CudaBackend::EpDispatchUnpackImpl(const Tensor& recv_rows, const Tensor& recv_routes,
                                               const Tensor& recv_counts, Tensor* rows,
                                               Tensor* expert_offsets, Tensor* route_rows) {
  ASSIGN_OR_RETURN(Elem wire, ElemOf(recv_rows.dtype));
  const int64_t w = recv_counts.shape[0], e = expert_offsets->shape[0] - 1;
  return cuda::EpDispatchUnpack(
      recv_rows.data(), wire, recv_routes.data_as<int32_t>(), recv_counts.data_as<int32_t>(), w,
      recv_rows.shape[0] / w, recv_routes.shape[1] / 2, recv_rows.shape[1],
      rows->mutable_data_as<float>(), rows->shape[0], expert_offsets->mutable_data_as<int32_t>(), e,
      route_rows->mutable_data_as<int32_t>(), errors_, s());
}

absl::Status CudaBackend::EpCombinePackImpl(const Tensor& expert_out, const Tensor& recv_routes,
                                            const Tensor& recv_counts, const Tensor& route_rows,
                                            Tensor* back_rows) {
  ASSIGN_OR_RETURN(Elem wire, ElemOf(back_rows->dtype));
  const int64_t w = recv_counts.shape[0];
  return cuda::EpCombinePack(
      expert_out.data_as<float>(), expert_out.shape[0], recv_routes.data_as<int32_t>(),
      recv_counts.data_as<int32_t>(), route_rows.data_as<int32_t>(), w, back_rows->shape[0] / w,
      route_rows.shape[1], back_rows->shape[1], back_rows->mutable_data(), wire, errors_, s());
}

absl::Status CudaBackend::EpCombineUnpackImpl(const Tensor& returned_rows,
                                              const Tensor& token_slots, Tensor* out) {
  ASSIGN_OR_RETURN(Elem wire, ElemOf(returned_rows.dtype));
  const int64_t t = token_slots.shape[0], w = token_slots.shape[1];
  return cuda::EpCombineUnpack(returned_rows.data(), wire, token_slots.data_as<int32_t>(), t, w,
                               returned_rows.shape[0] / w, returned_rows.shape[1],
                               out->mutable_data_as<float>(), errors_, s());
}

}  // namespace epserve::kernels::cuda
