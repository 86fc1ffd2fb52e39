// The backend-neutral op interface. Model code is written once against
// `Backend`; kernels/cpu implements it (the reference), kernels/cuda will.
//
// Conventions (every op):
//  * Tensors live on the backend's device; activations are float32 and
//    contiguous row-major. Weights are float32, bfloat16 or float16 (norm and
//    router weights float32) unless an op says otherwise; index tensors int32.
//  * Outputs are preallocated by the caller (`Empty`) and passed as pointers;
//    an output may alias an input only where the op says so.
//  * Work is enqueued on the backend's stream (`stream()`); the CPU backend
//    runs it synchronously and its stream is null. `Synchronize()` waits.
//  * Shape / dtype / contiguity preconditions are checked once, here at the
//    op boundary (ops.cc, shared by every backend), and fail with
//    InvalidArgument "<Op>: <argument>: expected ..., found ...".
//    Checks that need tensor contents (ids in range, block tables, slots) are
//    done by the backend where it can read them (the CPU backend always).
//  * Linear layers' weights are LinearWeights (linear_weight.h): a format
//    and its tensors. Before any other check of a linear op, the op boundary
//    asks Supports(op, format) for each weight and fails with Unimplemented
//    "<Op>: <argument>: weight format <format> is not supported by the
//    <device> backend"; shape / dtype checks follow, per format.
//  * Shapes in comments: T tokens, H hidden, K in-features, N out-features,
//    D head_dim, Hq / Hkv query / key-value heads, E experts, k top-k.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/moe_routing.h"
#include "common/rope.h"
#include "common/weight_format.h"
#include "kernels/device.h"
#include "kernels/linear_weight.h"
#include "kernels/tensor.h"

namespace epserve::kernels {

// ---- Rope --------------------------------------------------------------

// RopeType, RopeLayout and RopeConfig are common/rope.h's (the model
// description carries the same struct).
using ::epserve::RopeConfig;
using ::epserve::RopeLayout;
using ::epserve::RopeType;

struct RopeFrequencies {
  std::vector<float> inv_freq;  // [head_dim / 2], float32 like transformers
  float attention_factor = 1.0f;
};

// The inverse frequencies and cos/sin scale for `head_dim` (even, > 0).
// Host math, shared by every backend. Errors name the bad parameter.
absl::StatusOr<RopeFrequencies> ComputeRopeFrequencies(const RopeConfig& config,
                                                       int64_t head_dim);

// ---- Paged attention ---------------------------------------------------

// One batch of sequences for PagedAttention. Sequence s owns query rows
// [query_start[s], query_start[s+1]) of q/out; those q_len tokens are the
// LAST q_len tokens of its context, i.e. query row i of s has position
// context_lens[s] - q_len + i and attends causally to cached tokens
// [0, that position]. Prefill: q_len == context_len; chunked prefill: a
// chunk after earlier chunks; decode: q_len == 1. The new tokens' K/V must
// already be in the cache (WriteKvCache). Token j of sequence s lives in
// cache block block_tables[s, j / block_size], offset j % block_size.
struct AttentionMetadata {
  Tensor query_start;   // [num_seqs + 1] int32, ascending, query_start[0] == 0
  Tensor context_lens;  // [num_seqs] int32, >= q_len of the sequence
  Tensor block_tables;  // [num_seqs, max_blocks_per_seq] int32 (unused entries ignored)
};

struct PagedAttentionArgs {
  const Tensor* q = nullptr;        // [T, Hq*D] float32
  const Tensor* k_cache = nullptr;  // [num_blocks, block_size, Hkv, D] f32/bf16/f16
  const Tensor* v_cache = nullptr;  // same shape and dtype as k_cache
  const AttentionMetadata* metadata = nullptr;
  int64_t num_q_heads = 0;  // Hq, a multiple of Hkv (GQA group = Hq / Hkv)
  float scale = 0.0f;       // softmax scale; <= 0 means 1/sqrt(D)
};

// Everything of one layer's attention between the q/k/v projections and
// PagedAttention (Backend::AttentionPrologue):
//
//   q, k ─HeadRmsNorm(q_norm / k_norm, when given)─► Rope(positions) ─► q, k (in place)
//                                                     k, v ─WriteKvCache(slot_mapping)─► caches
//
// The full-width q/k norm (OLMoE) is a RmsNorm before this op, not part of it.
struct AttentionPrologueArgs {
  Tensor* q = nullptr;                   // [T, Hq*D] float32, updated in place
  Tensor* k = nullptr;                   // [T, Hkv*D] float32, updated in place
  const Tensor* v = nullptr;             // [T, Hkv*D] float32
  const Tensor* q_norm = nullptr;        // [D] float32 per-head weight; nullptr: no q norm
  const Tensor* k_norm = nullptr;        // [D] float32 per-head weight; nullptr: no k norm
  float norm_eps = 1e-6f;                // used when a norm weight is given
  RopeConfig rope;
  int64_t head_dim = 0;                  // D
  const Tensor* positions = nullptr;     // [T] int32, >= 0
  const Tensor* slot_mapping = nullptr;  // [T] int32 (as WriteKvCache: -1 skips the token)
  Tensor* k_cache = nullptr;             // [num_blocks, block_size, Hkv, D] f32/bf16/f16
  Tensor* v_cache = nullptr;             // same shape and dtype as k_cache
};

// ---- MoE ---------------------------------------------------------------

// Token rows grouped by expert. Assignment a = t*k + j is token t's j-th
// routed expert. Rows of expert e are permuted rows
// [expert_offsets[e], expert_offsets[e+1]), in ascending assignment order.
//
//   hidden [T,H] ──MoePermute──► rows [T*k,H] (expert-major) ──GroupedExpertMatMul──► ...
//   ... expert_out [T*k,H] ──MoeUnpermute(weights)──► out [T,H] (original order)
struct MoePermutation {
  Tensor rows;                    // [T*k, H] float32
  Tensor expert_offsets;          // [E + 1] int32
  Tensor permuted_to_assignment;  // [T*k] int32: row r holds assignment a
  Tensor assignment_to_permuted;  // [T*k] int32: inverse of the above
};

// ---- Expert-parallel exchange ------------------------------------------
//
// The slot layout of worker/moe/device_dispatcher.h. With W ranks and a
// capacity of C slots per destination, a send (or receive) buffer is W
// regions of C slots, rank-major: slot (r, i) is row r*C + i. A slot holds
// one token's row (float32 or bfloat16, the wire dtype) and its route, 2k
// int32 words: the k expert ids of the token's picks that the slot's rank
// holds (-1 for a pick held by another rank), then the k routing weights
// (float bits, all k of them). A token is sent at most once to each rank:
//
//   hidden [T,H], topk [T,k] ─EpDispatchPack─► send rows/routes, counts [W],
//                                              token_slots [T,W]
//     ── exchange (the communicator: region r of every rank to rank r) ──►
//   recv rows/routes, counts [W] ─EpDispatchUnpack─► rows [M,H] grouped by
//                                  expert, expert_offsets [E+1], route_rows
//     ── grouped expert GEMMs ──► expert_out [M,H]
//   ─EpCombinePack─► back rows (one weighted partial sum per slot)
//     ── exchange back (the same regions, counts swapped) ──►
//   returned rows ─EpCombineUnpack(token_slots)─► out [T,H]
//
// Launch shapes depend only on the tensors' shapes (never on counts), so the
// whole exchange can be captured in a graph around a device communicator.
// Content errors (an expert id or rank out of range, a count above C, more
// rows than M) fail naming the value on the CPU and are reported at the next
// CopyToHost on a GPU (the offending rows are skipped).

// ---- Sampling ------------------------------------------------------------

// One row of Backend::SampleTokens: the parameters of sampling::SamplingParams
// the device needs, resolved on the host (a drawn seed for unseeded
// requests, log(min_p) computed once).
struct SampleRow {
  int32_t logits_row = 0;  // which row of `logits`
  float temperature = 1.0f;  // 0: greedy; otherwise already >= kMinTemperature
  float top_p = 1.0f;
  int32_t top_k = 0;                 // <= 0: off
  double log_min_p = -INFINITY;      // log(min_p); -inf: off
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;                 // the Philox counter: tokens generated so far
  int32_t num_top_logprobs = 0;      // <= SampleTokens' top_n
  int32_t logprobs = 0;              // 1: compute the token's logprob
  int32_t edits_begin = 0;           // this row's edits: [edits_begin, edits_end)
  int32_t edits_end = 0;
};

// A logit edit applied before sanitising, in the host sampler's order: the
// min_tokens mask (-inf) and the penalties of a token of the history. Within
// a row each token id appears at most once.
struct SampleEdit {
  int32_t token_id = 0;
  uint32_t output_count = 0;  // occurrences among the generated tokens
  uint8_t in_history = 0;     // in prompt or output: repetition penalty applies
  uint8_t mask = 0;           // min_tokens mask: the logit becomes -inf
  uint16_t pad = 0;
};

enum SampleStatus : int32_t {
  kSampleOk = 0,
  // No token has a finite logit after NaN masking, penalties and min_tokens
  // masking (every logit is NaN or -inf).
  kSampleNoFiniteLogit = 1,
};
inline constexpr int64_t kSampleHeader = 3;

// ---- The backend -------------------------------------------------------

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceSpec device() const = 0;
  // Native stream handle (cudaStream_t for CUDA); null on the CPU.
  virtual void* stream() const = 0;
  // Waits for every op enqueued so far.
  virtual absl::Status Synchronize() = 0;

  // Whether this backend runs linear op `op` on weights stored in `format`.
  // The linear ops refuse other weights at the op boundary; the weight
  // loader refuses a model whose layers need an unsupported pair.
  virtual bool Supports(LinearOp op, WeightFormat format) const = 0;

  // -- memory --
  // A new uninitialised device tensor.
  virtual absl::StatusOr<Tensor> Empty(DataType dtype, std::vector<int64_t> shape) = 0;
  // A device tensor with the contents of host tensor `host` (weights). The
  // CPU backend returns `host` itself (no copy; mmapped weights stay shared).
  virtual absl::StatusOr<Tensor> ToDevice(const Tensor& host) = 0;
  // Copies `bytes` == dst->nbytes() host bytes into device tensor `dst`.
  absl::Status CopyFromHost(const void* src, size_t bytes, Tensor* dst);
  // Copies device tensor `src` (src.nbytes() == bytes) to host memory.
  // Waits for the copy (and so for every op before it). On a GPU this is
  // also where content errors the kernels found (ids, slots, blocks,
  // experts) are reported, naming the op.
  absl::Status CopyToHost(const Tensor& src, void* dst, size_t bytes);
  // Host memory for per-step staging: page-locked on a GPU (copies from it
  // do not synchronise), ordinary host memory on the CPU. The caller must
  // not rewrite it while a copy from it may still be in flight.
  virtual absl::StatusOr<std::shared_ptr<Storage>> AllocateStagingHost(size_t bytes);
  // Stream-ordered host staging (graph-capturable; nothing waits): a copy of
  // device tensor `src` into page-locked host memory `dst` (from
  // AllocateStagingHost, at least src.nbytes()), and of page-locked `src`
  // into device tensor `dst` (dst->nbytes() bytes). The defaults copy at once
  // (CopyToHost / CopyFromHost); the CUDA backend enqueues them.
  virtual absl::Status CopyToStagingAsync(const Tensor& src, void* dst);
  virtual absl::Status CopyFromStagingAsync(const void* src, Tensor* dst);
  // Runs fn(arg) on a host thread after the work enqueued before it and
  // before the work enqueued after it (a host node when captured into a
  // graph: every replay runs it). fn must not call the backend; `arg` must
  // outlive every run. The default waits for the stream and calls it.
  virtual absl::Status EnqueueHostCall(void (*fn)(void*), void* arg);
  // Stream-ordered timestamps (graph-capturable: a mark captured into a
  // graph is taken at every replay). Record(i) marks the point the stream
  // reaches after the work enqueued before it; Seconds(a, b) is the time from
  // mark a to mark b. Seconds fails with FailedPrecondition when either mark
  // was never recorded, Unavailable when the stream has not reached one yet,
  // and OutOfRange for an index outside [0, n). The default takes host time
  // after Synchronize (exact for a synchronous backend); the CUDA backend
  // records events (device time, ~0.5 µs resolution).
  class Timestamps {
   public:
    virtual ~Timestamps() = default;
    virtual absl::Status Record(int i) = 0;
    virtual absl::StatusOr<double> Seconds(int from, int to) = 0;
  };
  virtual absl::StatusOr<std::unique_ptr<Timestamps>> CreateTimestamps(int n);
  // Moves rows between two tensors of the same width by blocks: for each
  // block b, dst rows [b.dst, b.dst + b.rows) = src rows [b.src, b.src +
  // b.rows), converted from src's dtype to dst's (float32, bfloat16,
  // float16, any pair; the same dtype copies bits). Rows of dst that no block
  // names keep their contents. Blocks must not overlap in dst, and dst must
  // not alias src. A block outside src or dst fails naming it where the
  // backend reads the blocks (the CPU always; a GPU reports it at the next
  // CopyToHost, leaving that block uncopied).
  absl::Status CopyRows(const Tensor& src,     // [N, W] f32/bf16/f16
                        const Tensor& blocks,  // [B, 3] int32: src row, dst row, rows
                        Tensor* dst);          // [M, W] f32/bf16/f16

  // Dummy weights made on the device: element i of `t` is 1.0 when `ones`,
  // else (2u - 1) * half_width, u = (z >> 40) / 2^24, z the SplitMix64
  // output for state `state0 + (i + 1) * 0x9E3779B97F4A7C15`, rounded to
  // t's dtype (float32 / bfloat16 / float16). The default fills host memory
  // and copies it; the CUDA backend fills in a kernel.
  virtual absl::Status FillDummy(Tensor* t, uint64_t state0, float half_width, bool ones);

  // -- sampling (so that only ids and logprobs leave the device) --
  // Draws one token per row on the device, so that only the ids and the
  // requested logprobs leave it: the worker's sampler (worker/sampling,
  // sampler.h) in full — min_tokens masking and penalties (as `edits`),
  // sanitising, greedy or temperature / min_p / top_k / top_p and the
  // Philox inverse-CDF draw, raw or processed logprobs and top logprobs.
  // The same logits, params, edits, seed and step give the same token as
  // the host sampler (up to the last-ulp differences of exp between host and
  // device, which only matter for a draw within ~1e-7 of a boundary).
  // `packed` receives per row kSampleHeader + 2 * top_n int32 words:
  //   [0] token id, [1] SampleStatus, [2] the token's logprob (float bits),
  //   [3, 3 + top_n) top ids, [3 + top_n, 3 + 2 top_n) their logprobs (float
  //   bits); a row's unused top entries are id -1.
  // The default is UNIMPLEMENTED: the CPU worker samples host logits with
  // sampling::Sampler directly.
  absl::Status SampleTokens(const Tensor& logits,  // [L, V] float32
                            absl::Span<const SampleRow> rows, absl::Span<const SampleEdit> edits,
                            int64_t top_n, bool processed_logprobs,
                            Tensor* packed);  // [rows.size(), kSampleHeader + 2 top_n] int32

  // -- step graphs (CUDA graphs; optional) --
  // A recorded sequence of ops replayed with the same buffers. Replay()
  // enqueues the whole sequence on the stream.
  class Graph {
   public:
    virtual ~Graph() = default;
    virtual absl::Status Replay() = 0;
  };
  virtual bool SupportsGraphs() const { return false; }
  // Records every op `body` enqueues (nothing runs) into a Graph. Inside
  // `body` only device work is allowed: no copies to the host, no
  // Synchronize, and no tensor allocated before the capture may be freed.
  virtual absl::StatusOr<std::unique_ptr<Graph>> Capture(const std::function<absl::Status()>& body);

  // -- dense --
  // y = x · w^T (+ bias), nn.Linear layout.
  absl::Status MatMul(const Tensor& x,        // [T, K] float32
                      const LinearWeight& w,  // N x K; unquantized: [N, K] f32/bf16/f16
                      const Tensor& bias,     // [N] f32/bf16/f16, or undefined
                      Tensor* y);             // [T, N] float32, not aliasing x
  // ys[i] = x · ws[i]^T (+ biases[i]) for up to 4 weights reading the same x
  // (the q, k and v projections), each exactly as MatMul computes it;
  // biases[i] may be null or undefined. The CUDA backend runs decode-sized
  // ones in one launch.
  absl::Status MatMulShared(const Tensor& x, absl::Span<const LinearWeight* const> ws,
                            absl::Span<const Tensor* const> biases, absl::Span<Tensor* const> ys);
  // out[t] = table[ids[t]]; an id outside [0, V) fails naming the id.
  absl::Status Embedding(const Tensor& ids,    // [T] int32
                         const Tensor& table,  // [V, H] f32/bf16/f16
                         Tensor* out);         // [T, H] float32

  // y = x * rsqrt(mean(x^2) + eps) * w over each row, in fp32 (HF RMSNorm).
  // Also the full-width q/k norm (OLMoE: w [Hq*D] over rows of [T, Hq*D]).
  // `y` may alias `x`.
  absl::Status RmsNorm(const Tensor& x,  // [T, H] float32
                       const Tensor& w,  // [H] float32
                       float eps,
                       Tensor* y);  // [T, H] float32
  // residual += x; y = RmsNorm(residual). `y` may alias `x`.
  absl::Status AddRmsNorm(const Tensor& x,   // [T, H] float32
                          Tensor* residual,  // [T, H] float32, updated in place
                          const Tensor& w,   // [H] float32
                          float eps,
                          Tensor* y);  // [T, H] float32
  // Per-head norm in place (Qwen3 q_norm/k_norm): every D-wide head of every
  // row is normalised with the same weight.
  absl::Status HeadRmsNorm(Tensor* x,         // [T, heads*D] float32, in place
                           const Tensor& w,   // [D] float32
                           float eps);

  // Rotates q and k in place by their token's position.
  absl::Status Rope(const RopeConfig& config, int64_t head_dim,
                    const Tensor& positions,  // [T] int32, >= 0
                    Tensor* q,                // [T, Hq*D] float32
                    Tensor* k);               // [T, Hkv*D] float32

  // out = silu(gate) * up. `out` may alias gate or up.
  absl::Status SiluAndMul(const Tensor& gate,  // [T, I] float32
                          const Tensor& up,    // [T, I] float32
                          Tensor* out);        // [T, I] float32
  // Same with gate and up packed as [gate | up] (merged gate_up weights).
  absl::Status SiluAndMulPacked(const Tensor& gate_up,  // [T, 2I] float32
                                Tensor* out);           // [T, I] float32
  // out = a + b. `out` may alias a or b.
  absl::Status Add(const Tensor& a,  // [T, H] float32
                   const Tensor& b,  // [T, H] float32
                   Tensor* out);     // [T, H] float32
  // out[t] += sigmoid(gate_logit[t]) * x[t] (Qwen2-MoE shared expert).
  absl::Status SigmoidGateMulAdd(const Tensor& gate_logit,  // [T, 1] float32
                                 const Tensor& x,           // [T, H] float32
                                 Tensor* out);              // [T, H] float32

  // -- attention --
  // Stores token t's K/V at cache slot slot_mapping[t] (= block*block_size +
  // offset; -1 skips the token, e.g. padding). Other slots fail naming them.
  absl::Status WriteKvCache(const Tensor& k,             // [T, Hkv*D] float32
                            const Tensor& v,             // [T, Hkv*D] float32
                            const Tensor& slot_mapping,  // [T] int32
                            Tensor* k_cache,  // [num_blocks, block_size, Hkv, D] f32/bf16/f16
                            Tensor* v_cache);             // same as k_cache
  // HeadRmsNorm(q, q_norm), HeadRmsNorm(k, k_norm) (each when given),
  // Rope(q, k), WriteKvCache(k, v) as one op, with the semantics of those
  // (see AttentionPrologueArgs). The default runs exactly those ops; the
  // CUDA backend fuses them into one kernel where it can (same results).
  absl::Status AttentionPrologue(const AttentionPrologueArgs& args);
  // Causal GQA attention over the paged cache, fp32 accumulation, stable
  // softmax. See AttentionMetadata for the batch layout.
  absl::Status PagedAttention(const PagedAttentionArgs& args,
                              Tensor* out);  // [T, Hq*D] float32

  // -- MoE --
  // The router (common/moe_routing.h), k = routing.top_k: probs =
  // softmax(router_logits) in fp32; the k most probable experts (ties: lower
  // id first); weights = their probs, divided by their sum when
  // routing.renormalize. Other routing fields must have the values every
  // backend runs (FindUnsupportedRouting): otherwise UNIMPLEMENTED naming the
  // field ("MoeGate: routing.scoring: expected softmax, found sigmoid").
  // Non-finite rows (the rule, also on every backend):
  //   NaN counts as -inf; if some logit is +inf the +inf experts share the
  //   mass equally; if every logit is -inf/NaN the row is uniform. So ids are
  //   always k distinct experts in [0, E) and weights finite in [0, 1].
  absl::Status MoeGate(const Tensor& router_logits,  // [T, E] float32
                       const RoutingParams& routing,
                       Tensor* topk_ids,       // [T, k] int32
                       Tensor* topk_weights);  // [T, k] float32
  // Groups hidden rows by expert (see MoePermutation); preallocate `out`
  // with EmptyMoePermutation. topk_ids outside [0, E) fail naming the id.
  absl::Status MoePermute(const Tensor& hidden,    // [T, H] float32
                          const Tensor& topk_ids,  // [T, k] int32
                          MoePermutation* out);
  // out rows of expert e = rows of e · weights[e]^T. `weights` is indexed by
  // global expert id (size E); an undefined LinearWeight marks an expert this
  // worker does not hold, which is an error if any row is routed to it. The
  // held experts share one format (and, unquantized, one dtype).
  // expert_offsets[E] <= R; rows past it are left as they are (neither
  // read in `rows` nor written in `out`): a receiver sizes `rows` by capacity.
  absl::Status GroupedExpertMatMul(const Tensor& rows,                      // [R, K] float32
                                   const Tensor& expert_offsets,            // [E + 1] int32
                                   absl::Span<const LinearWeight> weights,  // E x (N x K)
                                   Tensor* out);                            // [R, N] float32
  // The first half of the experts' SwiGLU MLPs in one op:
  //   out rows of expert e = silu(rows · gate[e]^T) * (rows · up[e]^T).
  // Same layout and rules as GroupedExpertMatMul (gate and up hold the same
  // experts). The default runs GroupedExpertMatMul twice and SiluAndMul (so
  // a backend relying on it supports a format for both ops or neither); the
  // CUDA backend fuses it (the weights of both are read in one pass). The
  // default's SiluAndMul runs over all R rows (rows past expert_offsets[E]
  // hold whatever they held).
  absl::Status GroupedExpertGateUp(const Tensor& rows,                   // [R, K] float32
                                   const Tensor& expert_offsets,         // [E + 1] int32
                                   absl::Span<const LinearWeight> gate,  // E x (N x K)
                                   absl::Span<const LinearWeight> up,    // E x (N x K)
                                   Tensor* out);                         // [R, N] float32
  // out[t] = sum_j topk_weights[t, j] * expert_out[assignment_to_permuted[t*k + j]],
  // j ascending, fp32 accumulation. Overwrites out.
  absl::Status MoeUnpermute(const Tensor& expert_out,    // [T*k, H] float32
                            const Tensor& topk_weights,  // [T, k] float32
                            const MoePermutation& perm,
                            Tensor* out);  // [T, H] float32

  // -- expert-parallel exchange (see "Expert-parallel exchange" above) --
  // W = send_counts.shape[0], C = send_rows.shape[0] / W >= T. For each
  // token t and each rank r holding one of its picks (expert_to_rank of
  // topk_ids[t, j]), in token order: slot i = the number of earlier tokens
  // sent to r; token_slots[t, r] = i (-1 for a rank the token does not go
  // to); row r*C + i = hidden[t] in the wire dtype (round to nearest even);
  // its route = the picks held by r (others -1) and all k weights.
  // send_counts[r] = tokens sent to r. Slots past the counts keep their
  // contents. Deterministic: the same inputs give the same bits on every
  // backend.
  absl::Status EpDispatchPack(const Tensor& hidden,          // [T, H] float32
                              const Tensor& topk_ids,        // [T, k] int32
                              const Tensor& topk_weights,    // [T, k] float32
                              const Tensor& expert_to_rank,  // [E] int32 in [0, W)
                              Tensor* send_rows,             // [W*C, H] f32/bf16
                              Tensor* send_routes,           // [W*C, 2k] int32
                              Tensor* send_counts,           // [W] int32
                              Tensor* token_slots);          // [T, W] int32
  // The receiving side. Slot (q, i) is valid when i < recv_counts[q]. Every
  // valid slot's route entry j with an id e >= 0 becomes one row of `rows`
  // (the slot's row, converted to float32) among expert e's rows
  // [expert_offsets[e], expert_offsets[e+1]); route_rows[s, j] = that row
  // (-1 for route entries without one and for invalid slots).
  // expert_offsets[E] = the number of such rows (<= M); rows past it keep
  // their contents. The order of rows within an expert is unspecified (the
  // CPU keeps slot order); every row's values are exact. E =
  // expert_offsets.shape[0] - 1; ids outside [0, E) or counts above C are
  // errors.
  absl::Status EpDispatchUnpack(const Tensor& recv_rows,    // [W*C, H] f32/bf16
                                const Tensor& recv_routes,  // [W*C, 2k] int32
                                const Tensor& recv_counts,  // [W] int32
                                Tensor* rows,               // [M, H] float32
                                Tensor* expert_offsets,     // [E + 1] int32
                                Tensor* route_rows);        // [W*C, k] int32
  // back_rows[s] = sum over j ascending with route_rows[s, j] >= 0 of
  // weight_j * expert_out[route_rows[s, j]] (fp32, one fused multiply-add
  // per term, then rounded to back_rows' dtype), for every valid slot s
  // (i < recv_counts[q]); invalid slots keep their contents.
  absl::Status EpCombinePack(const Tensor& expert_out,   // [M, H] float32
                             const Tensor& recv_routes,  // [W*C, 2k] int32
                             const Tensor& recv_counts,  // [W] int32
                             const Tensor& route_rows,   // [W*C, k] int32
                             Tensor* back_rows);         // [W*C, H] f32/bf16
  // out[t] = sum over r ascending with token_slots[t, r] >= 0 of
  // returned_rows[r*C + token_slots[t, r]] (fp32). Overwrites out.
  absl::Status EpCombineUnpack(const Tensor& returned_rows,  // [W*C, H] f32/bf16
                               const Tensor& token_slots,    // [T, W] int32
                               Tensor* out);                 // [T, H] float32

 protected:
  // Backend implementations. Called only after the checks above passed
  // (for the linear ops: only with weights in formats Supports accepts).
  virtual absl::Status CopyFromHostImpl(const void* src, size_t bytes, Tensor* dst) = 0;
  virtual absl::Status CopyToHostImpl(const Tensor& src, void* dst, size_t bytes) = 0;
  virtual absl::Status CopyRowsImpl(const Tensor& src, const Tensor& blocks, Tensor* dst) = 0;
  virtual absl::Status MatMulImpl(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                                  Tensor* y) = 0;
  // Arguments checked as MatMul's; the default runs MatMulImpl per weight.
  virtual absl::Status MatMulSharedImpl(const Tensor& x, absl::Span<const LinearWeight* const> ws,
                                        absl::Span<const Tensor* const> biases,
                                        absl::Span<Tensor* const> ys);
  virtual absl::Status EmbeddingImpl(const Tensor& ids, const Tensor& table, Tensor* out) = 0;
  // residual == nullptr: plain norm of x.
  virtual absl::Status RmsNormImpl(const Tensor& x, Tensor* residual, const Tensor& w,
                                   float eps, Tensor* y) = 0;
  virtual absl::Status HeadRmsNormImpl(Tensor* x, const Tensor& w, float eps) = 0;
  virtual absl::Status RopeImpl(const RopeFrequencies& freqs, RopeLayout layout,
                                int64_t head_dim, const Tensor& positions, Tensor* q,
                                Tensor* k) = 0;
  // up == nullptr: gate is packed [gate | up].
  virtual absl::Status SiluAndMulImpl(const Tensor& gate, const Tensor* up, Tensor* out) = 0;
  virtual absl::Status AddImpl(const Tensor& a, const Tensor& b, Tensor* out) = 0;
  virtual absl::Status SigmoidGateMulAddImpl(const Tensor& gate_logit, const Tensor& x,
                                             Tensor* out) = 0;
  virtual absl::Status WriteKvCacheImpl(const Tensor& k, const Tensor& v,
                                        const Tensor& slot_mapping, Tensor* k_cache,
                                        Tensor* v_cache) = 0;
  // Default: HeadRmsNormImpl, RopeImpl and WriteKvCacheImpl in turn, errors
  // prefixed with "AttentionPrologue: ". `freqs` are those of args.rope.
  virtual absl::Status AttentionPrologueImpl(const AttentionPrologueArgs& args,
                                             const RopeFrequencies& freqs);
  virtual absl::Status PagedAttentionImpl(const PagedAttentionArgs& args, float scale,
                                          Tensor* out) = 0;
  // `routing` is one FindUnsupportedRouting accepts.
  virtual absl::Status MoeGateImpl(const Tensor& router_logits, const RoutingParams& routing,
                                   Tensor* topk_ids, Tensor* topk_weights) = 0;
  virtual absl::Status MoePermuteImpl(const Tensor& hidden, const Tensor& topk_ids,
                                      MoePermutation* out) = 0;
  virtual absl::Status GroupedExpertMatMulImpl(const Tensor& rows, const Tensor& expert_offsets,
                                               absl::Span<const LinearWeight> weights,
                                               Tensor* out) = 0;
  virtual absl::Status MoeUnpermuteImpl(const Tensor& expert_out, const Tensor& topk_weights,
                                        const MoePermutation& perm, Tensor* out) = 0;
  virtual absl::Status GroupedExpertGateUpImpl(const Tensor& rows, const Tensor& expert_offsets,
                                               absl::Span<const LinearWeight> gate,
                                               absl::Span<const LinearWeight> up, Tensor* out);
  // The Ep* ops' defaults are UNIMPLEMENTED naming the backend.
  virtual absl::Status EpDispatchPackImpl(const Tensor& hidden, const Tensor& topk_ids,
                                          const Tensor& topk_weights, const Tensor& expert_to_rank,
                                          Tensor* send_rows, Tensor* send_routes,
                                          Tensor* send_counts, Tensor* token_slots);
  virtual absl::Status EpDispatchUnpackImpl(const Tensor& recv_rows, const Tensor& recv_routes,
                                            const Tensor& recv_counts, Tensor* rows,
                                            Tensor* expert_offsets, Tensor* route_rows);
  virtual absl::Status EpCombinePackImpl(const Tensor& expert_out, const Tensor& recv_routes,
                                         const Tensor& recv_counts, const Tensor& route_rows,
                                         Tensor* back_rows);
  virtual absl::Status EpCombineUnpackImpl(const Tensor& returned_rows, const Tensor& token_slots,
                                           Tensor* out);
  virtual absl::Status SampleTokensImpl(const Tensor& logits, absl::Span<const SampleRow> rows,
                                        absl::Span<const SampleEdit> edits, int64_t top_n,
                                        bool processed_logprobs, Tensor* packed);
};

// Backend::FillDummy's values (see there) written into a writable host
// tensor: the reference every backend's FillDummy reproduces.
absl::Status FillDummyHost(Tensor* t, uint64_t state0, float half_width, bool ones);

// `host` (a LinearWeight of host tensors) on `backend`'s device: every
// defined tensor through Backend::ToDevice, the rest of the fields as they are.
absl::StatusOr<LinearWeight> LinearWeightToDevice(Backend& backend, const LinearWeight& host);

// Preallocates a MoePermutation for T tokens, top-k, width H, E experts.
absl::StatusOr<MoePermutation> EmptyMoePermutation(Backend& backend, int64_t num_tokens,
                                                   int64_t top_k, int64_t hidden,
                                                   int64_t num_experts);

}  // namespace epserve::kernels
