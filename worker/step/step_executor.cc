#include "worker/step/step_executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/sampling/sampling_params_proto.h"
#include "common/status.h"
#include "worker/models/offline_runner.h"
#include "worker/sampling/philox.h"
#include "worker/weights/model_loader.h"

namespace epserve::step {
namespace {

absl::Status Bad(int index, const std::string& request_id, absl::string_view field,
                 absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("request '", request_id, "': sequences[", index, "].", field, " ", what));
}

bool SupportedCacheDtype(DataType dtype) {
  return dtype == DataType::kFloat32 || dtype == DataType::kBFloat16 ||
         dtype == DataType::kFloat16;
}

}  // namespace

uint64_t KvBlockBytes(const kv_cache::KvCacheShape& shape, int64_t block_size, DataType dtype) {
  return shape.BlockBytes(block_size, dtype);
}

absl::StatusOr<int64_t> KvBlocksForBudget(const kv_cache::KvCacheShape& shape,
                                          int64_t block_size, DataType dtype,
                                          uint64_t budget_bytes) {
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("block_size must be > 0, got ", block_size));
  }
  const bool empty_pool =
      std::any_of(shape.layers.begin(), shape.layers.end(),
                  [](const kv_cache::KvPoolSpec& l) { return l.elements_per_token() <= 0; });
  if (shape.layers.empty() || empty_pool) {
    return absl::InvalidArgumentError("KV cache shape must have layers, kv heads and head_dim > 0");
  }
  if (!SupportedCacheDtype(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache dtype must be float32, bfloat16 or float16, got ", DataTypeName(dtype)));
  }
  const uint64_t per_block = KvBlockBytes(shape, block_size, dtype);
  const uint64_t blocks = budget_bytes / per_block;
  // Block ids travel as int32 in block tables.
  return static_cast<int64_t>(
      std::min<uint64_t>(blocks, static_cast<uint64_t>(std::numeric_limits<int32_t>::max())));
}

StepExecutor::StepExecutor(const StepExecutorOptions& options,
                           sampling::Sampler::Options sampler_options)
    : options_(options), sampler_(std::move(sampler_options)) {}

StepExecutor::~StepExecutor() = default;

absl::StatusOr<std::unique_ptr<StepExecutor>> StepExecutor::Create(
    const weights::ModelWeights& weights, kernels::Backend& backend,
    const StepExecutorOptions& options, std::unique_ptr<moe::TokenDispatcher> dispatcher) {
  if (options.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("step executor: block_size must be > 0, got ", options.block_size));
  }
  if (options.num_blocks <= 0 || options.num_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step executor: num_blocks must be in [1, 2^31), got ", options.num_blocks));
  }
  if (options.max_tracked_requests == 0) {
    return absl::InvalidArgumentError("step executor: max_tracked_requests must be > 0");
  }
  const ModelDescription& desc = weights.desc();
  sampling::Sampler::Options sampler_options;
  for (int64_t id : desc.eos_token_ids) sampler_options.eos_token_ids.push_back(static_cast<int32_t>(id));
  sampler_options.logprobs_mode = options.logprobs_mode;
  sampler_options.num_threads = std::max(1, options.sampler_threads);
  std::unique_ptr<StepExecutor> e(new StepExecutor(options, std::move(sampler_options)));
  ASSIGN_OR_RETURN(e->model_,
                   models::DecoderModel::Create(desc, weights, backend, std::move(dispatcher)));
  kv_cache::KvCacheOptions kv;
  kv.num_blocks = options.num_blocks;
  kv.block_size = options.block_size;
  kv.dtype = options.kv_cache_dtype;
  ASSIGN_OR_RETURN(kv_cache::KvCache cache,
                   kv_cache::KvCache::Create(backend, e->model_->kv_cache_shape(), kv));
  e->cache_ = std::make_unique<kv_cache::KvCache>(std::move(cache));
  if (options.graph_max_batch > 0 && backend.SupportsGraphs() && e->model_->capturable()) {
    models::DecodeGraphOptions graph_options;
    graph_options.max_batch = options.graph_max_batch;
    graph_options.max_blocks_per_seq =
        std::max<int64_t>(1, (options.graph_max_context + options.block_size - 1) /
                                 options.block_size);
    ASSIGN_OR_RETURN(e->graphs_,
                     models::DecodeGraphs::Create(*e->model_, *e->cache_, graph_options));
  }
  return e;
}

absl::StatusOr<std::unique_ptr<StepExecutor>> StepExecutor::Load(
    const std::string& model_dir, const weights::LoadOptions& load,
    const StepExecutorOptions& options) {
  ASSIGN_OR_RETURN(weights::LoadedModel model,
                   weights::LoadModel(model_dir, options.device, {}, load));
  std::unique_ptr<kernels::Backend> backend = std::move(model.backend);
  std::unique_ptr<weights::ModelWeights> owned_weights = std::move(model.weights);
  ASSIGN_OR_RETURN(std::unique_ptr<StepExecutor> e, Create(*owned_weights, *backend, options));
  e->owned_weights_ = std::move(owned_weights);
  e->owned_backend_ = std::move(backend);
  return e;
}

absl::Status StepExecutor::Validate(const control::v1::StepPlan& plan,
                                    std::vector<sampling::SamplingParams>* params) const {
  const int64_t vocab = model_->desc().vocab_size;
  const int64_t num_blocks = cache_->num_blocks();
  const int64_t block_size = cache_->block_size();
  std::unordered_map<std::string, int> seen;
  // (block id, sequence index) over the whole step, for the sharing check.
  std::vector<std::pair<uint32_t, int>> blocks;
  params->clear();
  params->reserve(static_cast<size_t>(plan.sequences_size()));
  for (int i = 0; i < plan.sequences_size(); ++i) {
    const control::v1::SequencePlan& seq = plan.sequences(i);
    const std::string& id = seq.request_id();
    if (id.empty()) return Bad(i, id, "request_id", "is empty");
    if (auto [it, inserted] = seen.emplace(id, i); !inserted) {
      return Bad(i, id, "request_id", absl::StrCat("repeats sequences[", it->second, "]"));
    }
    if (seq.token_ids_size() == 0) return Bad(i, id, "token_ids", "is empty");
    for (int j = 0; j < seq.token_ids_size(); ++j) {
      if (static_cast<int64_t>(seq.token_ids(j)) >= vocab) {
        return Bad(i, id, absl::StrCat("token_ids[", j, "]"),
                   absl::StrCat("= ", seq.token_ids(j), " is outside the vocabulary [0, ", vocab,
                                ")"));
      }
    }
    for (int j = 0; j < seq.block_table_size(); ++j) {
      if (static_cast<int64_t>(seq.block_table(j)) >= num_blocks) {
        return Bad(i, id, absl::StrCat("block_table[", j, "]"),
                   absl::StrCat("= ", seq.block_table(j), " is outside the KV cache's blocks [0, ",
                                num_blocks, ")"));
      }
      blocks.emplace_back(seq.block_table(j), i);
    }
    const int64_t context = static_cast<int64_t>(seq.start_position()) + seq.token_ids_size();
    const int64_t capacity = static_cast<int64_t>(seq.block_table_size()) * block_size;
    if (context > capacity) {
      return Bad(i, id, "block_table",
                 absl::StrCat("holds ", seq.block_table_size(), " blocks (", capacity,
                              " tokens) but start_position ", seq.start_position(), " + ",
                              seq.token_ids_size(), " tokens need ", context));
    }
    if (auto it = history_.find(id);
        it != history_.end() && static_cast<int64_t>(seq.start_position()) > it->second.size()) {
      return Bad(i, id, "start_position",
                 absl::StrCat("= ", seq.start_position(), " leaves a gap: only ",
                              it->second.size(), " tokens of the request were fed or sampled"));
    }
    sampling::SamplingParams p = sampling::SamplingParamsFromProto(seq.sampling_params());
    if (absl::Status s = sampling::Validate(p, vocab); !s.ok()) {
      return Bad(i, id, "sampling_params", absl::StrCat("invalid: ", s.message()));
    }
    params->push_back(std::move(p));
  }
  std::sort(blocks.begin(), blocks.end());
  for (size_t k = 1; k < blocks.size(); ++k) {
    if (blocks[k].first != blocks[k - 1].first) continue;
    const int a = blocks[k - 1].second;
    const int b = blocks[k].second;
    const std::string& id = plan.sequences(b).request_id();
    return Bad(b, id, "block_table",
               a == b ? absl::StrCat("lists block ", blocks[k].first, " twice")
                      : absl::StrCat("shares block ", blocks[k].first, " with request '",
                                     plan.sequences(a).request_id(), "' (sequences[", a, "])"));
  }
  return absl::OkStatus();
}

StepExecutor::History& StepExecutor::Track(const std::string& request_id) {
  auto it = history_.find(request_id);
  if (it == history_.end()) {
    if (history_.size() >= options_.max_tracked_requests) {
      // Drop the least recently stepped record, never one of this step.
      auto oldest = std::min_element(history_.begin(), history_.end(),
                                     [](const auto& a, const auto& b) {
                                       return a.second.last_step < b.second.last_step;
                                     });
      if (oldest != history_.end() && oldest->second.last_step < steps_) history_.erase(oldest);
    }
    it = history_.emplace(request_id, History{}).first;
  }
  it->second.last_step = steps_;
  return it->second;
}

void StepExecutor::Record(const control::v1::SequencePlan& seq, History& h) const {
  const int64_t start = seq.start_position();
  for (int j = 0; j < seq.token_ids_size(); ++j) {
    if (start + j < h.size()) continue;  // already recorded (decode, recompute)
    const int32_t token = static_cast<int32_t>(seq.token_ids(j));
    const bool is_prompt = seq.num_prompt_tokens() > 0
                               ? start + j < static_cast<int64_t>(seq.num_prompt_tokens())
                               : h.output.empty();
    (is_prompt ? h.prompt : h.output).push_back(token);
  }
}

bool StepExecutor::Release(const std::string& request_id) {
  return history_.erase(request_id) > 0;
}

namespace {

bool HasPenalties(const sampling::SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

void AddToIndex(int32_t id, bool output, absl::flat_hash_map<int32_t, uint32_t>& slot,
                std::vector<int32_t>& ids, std::vector<uint32_t>& counts) {
  auto [it, inserted] = slot.try_emplace(id, static_cast<uint32_t>(ids.size()));
  if (inserted) {
    ids.push_back(id);
    counts.push_back(0);
  }
  if (output) ++counts[it->second];
}

}  // namespace

absl::StatusOr<std::vector<absl::StatusOr<sampling::SampledToken>>> StepExecutor::Sample(
    const kernels::Tensor& logits, const std::vector<sampling::SamplingRow>& rows,
    const std::vector<History*>& histories) {
  kernels::Backend& b = model_->backend();
  const int64_t vocab = model_->desc().vocab_size;
  if (b.device().type == kernels::DeviceType::kCpu) {
    ASSIGN_OR_RETURN(std::vector<float> host, models::ToHostFloats(b, logits));
    return sampler_.SampleBatch(host, vocab, rows);
  }
  const sampling::Sampler::Options& so = sampler_.options();
  std::vector<kernels::SampleRow> specs(rows.size());
  std::vector<kernels::SampleEdit> edits;
  int64_t top_n = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const sampling::SamplingRow& row = rows[i];
    const sampling::SamplingParams& p = *row.params;
    kernels::SampleRow& spec = specs[i];
    spec.logits_row = static_cast<int32_t>(i);
    spec.temperature =
        sampling::IsGreedy(p) ? 0.0f : std::max(p.temperature, sampling::kMinTemperature);
    spec.top_p = p.top_p;
    spec.top_k = p.top_k;
    spec.log_min_p = p.min_p > 0.0f ? std::log(static_cast<double>(p.min_p))
                                    : -std::numeric_limits<double>::infinity();
    spec.repetition_penalty = p.repetition_penalty;
    spec.frequency_penalty = p.frequency_penalty;
    spec.presence_penalty = p.presence_penalty;
    spec.seed = p.seed.has_value() ? *p.seed : sampling::DrawSeed();
    spec.step = row.step;
    spec.logprobs = p.logprobs ? 1 : 0;
    spec.num_top_logprobs =
        p.logprobs ? static_cast<int32_t>(std::min<int64_t>(p.top_logprobs, vocab)) : 0;
    top_n = std::max<int64_t>(top_n, spec.num_top_logprobs);
    spec.edits_begin = static_cast<int32_t>(edits.size());
    // Penalties: every distinct id of the history once (only the generated
    // ones when there is no repetition penalty).
    absl::flat_hash_map<int32_t, uint32_t> local_slot;  // edits of this row by id
    if (HasPenalties(p)) {
      History& h = *histories[i];
      if (h.penalties == nullptr) h.penalties = std::make_unique<PenaltyIndex>();
      PenaltyIndex& index = *h.penalties;
      for (; index.prompt_seen < h.prompt.size(); ++index.prompt_seen) {
        AddToIndex(h.prompt[index.prompt_seen], false, index.slot, index.ids, index.output_count);
      }
      for (; index.output_seen < h.output.size(); ++index.output_seen) {
        AddToIndex(h.output[index.output_seen], true, index.slot, index.ids, index.output_count);
      }
      const bool repetition = p.repetition_penalty != 1.0f;
      for (size_t j = 0; j < index.ids.size(); ++j) {
        if (!repetition && index.output_count[j] == 0) continue;
        kernels::SampleEdit& e = edits.emplace_back();
        e.token_id = index.ids[j];
        e.output_count = index.output_count[j];
        e.in_history = 1;
      }
    }
    // min_tokens: stop ids and EOS become -inf (merged into a penalty edit
    // of the same id: each id once per row).
    if (row.output_ids.size() < p.min_tokens) {
      const size_t row_begin = static_cast<size_t>(spec.edits_begin);
      auto mask = [&](int32_t id) {
        if (id < 0 || id >= vocab) return;
        if (local_slot.empty() && edits.size() > row_begin) {
          for (size_t k = row_begin; k < edits.size(); ++k) {
            local_slot.emplace(edits[k].token_id, static_cast<uint32_t>(k));
          }
        }
        auto [it, inserted] = local_slot.try_emplace(id, static_cast<uint32_t>(edits.size()));
        if (inserted) {
          kernels::SampleEdit& e = edits.emplace_back();
          e.token_id = id;
        }
        edits[it->second].mask = 1;
      };
      for (int32_t id : p.stop_token_ids) mask(id);
      if (!p.ignore_eos) {
        for (int32_t id : so.eos_token_ids) mask(id);
      }
    }
    spec.edits_end = static_cast<int32_t>(edits.size());
  }
  const int64_t width = kernels::kSampleHeader + 2 * top_n;
  const int64_t r = static_cast<int64_t>(rows.size());
  ASSIGN_OR_RETURN(kernels::Tensor packed_d, b.Empty(DataType::kInt32, {r, width}));
  RETURN_IF_ERROR(b.SampleTokens(logits, specs, edits, top_n,
                                 so.logprobs_mode == sampling::LogprobsMode::kProcessed,
                                 &packed_d));
  std::vector<int32_t> packed(static_cast<size_t>(r * width));
  RETURN_IF_ERROR(b.CopyToHost(packed_d, packed.data(), packed.size() * 4));

  auto as_float = [](int32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  std::vector<absl::StatusOr<sampling::SampledToken>> out;
  out.reserve(rows.size());
  for (int64_t i = 0; i < r; ++i) {
    const int32_t* w = packed.data() + i * width;
    if (w[1] != kernels::kSampleOk) {
      out.push_back(absl::InvalidArgumentError(absl::StrCat(
          "row ", i,
          ": no token has a finite logit after NaN masking, penalties and min_tokens masking "
          "(every logit is NaN or -inf)")));
      continue;
    }
    const sampling::SamplingParams& p = *rows[static_cast<size_t>(i)].params;
    sampling::SampledToken t;
    t.token_id = w[0];
    if (p.logprobs) {
      t.logprob = as_float(w[2]);
      const int32_t n = specs[static_cast<size_t>(i)].num_top_logprobs;
      for (int32_t j = 0; j < n; ++j) {
        t.top_logprobs.push_back({w[kernels::kSampleHeader + j],
                                  as_float(w[kernels::kSampleHeader + top_n + j])});
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<control::v1::StepResult> StepExecutor::Execute(const control::v1::StepPlan& plan) {
  const auto t0 = std::chrono::steady_clock::now();
  control::v1::StepResult result;
  result.set_step_id(plan.step_id());
  auto finish = [&] {
    result.set_step_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  moe::TokenDispatcher& dispatcher = model_->dispatcher();
  dispatcher.BeginStep(plan.max_tokens_any_worker());
  if (plan.sequences_size() == 0) {
    if (options_.collective_moe) {
      RETURN_IF_ERROR(model_->ForwardNoTokens());
      // Nothing else waits for the exchange's device work on this rank.
      RETURN_IF_ERROR(model_->backend().Synchronize());
      RETURN_IF_ERROR(dispatcher.EndStep());
    }
    finish();
    return result;
  }
  std::vector<sampling::SamplingParams> params;
  RETURN_IF_ERROR(Validate(plan, &params));
  ++steps_;

  models::StepInput input;
  input.sequences.reserve(static_cast<size_t>(plan.sequences_size()));
  for (const control::v1::SequencePlan& seq : plan.sequences()) {
    models::StepSequence& s = input.sequences.emplace_back();
    s.token_ids.assign(seq.token_ids().begin(), seq.token_ids().end());
    s.num_cached = seq.start_position();
    s.block_table.assign(seq.block_table().begin(), seq.block_table().end());
    s.logits = seq.sample() ? models::LogitsRows::kLast : models::LogitsRows::kNone;
  }
  kernels::Tensor logits;
  std::optional<models::DecodeGraphs::Output> graph_out;
  if (graphs_ != nullptr && model_->step_capturable() && graphs_->Accepts(input)) {
    ASSIGN_OR_RETURN(graph_out, graphs_->Run(input));
    RETURN_IF_ERROR(dispatcher.AfterGraphLaunch());
    logits = graph_out->logits;
  } else {
    ASSIGN_OR_RETURN(logits, model_->Forward(input, *cache_));
  }

  // The step ran: record what was fed, then sample.
  std::vector<int> sampled;  // plan indices with a logits row, in row order
  std::vector<History*> records;
  for (int i = 0; i < plan.sequences_size(); ++i) {
    History& h = Track(plan.sequences(i).request_id());
    Record(plan.sequences(i), h);
    records.push_back(&h);
    if (plan.sequences(i).sample()) sampled.push_back(i);
  }
  if (!sampled.empty()) {
    std::vector<sampling::SamplingRow> rows;
    std::vector<History*> histories;
    rows.reserve(sampled.size());
    for (int i : sampled) {
      History& h = *records[static_cast<size_t>(i)];
      histories.push_back(&h);
      sampling::SamplingRow& row = rows.emplace_back();
      row.params = &params[static_cast<size_t>(i)];
      row.prompt_ids = h.prompt;
      row.output_ids = h.output;
      row.step = h.output.size();
    }
    ASSIGN_OR_RETURN(std::vector<absl::StatusOr<sampling::SampledToken>> tokens,
                     Sample(logits, rows, histories));
    for (size_t r = 0; r < sampled.size(); ++r) {
      const int i = sampled[r];
      const std::string& id = plan.sequences(i).request_id();
      if (!tokens[r].ok()) {
        return absl::Status(tokens[r].status().code(),
                            absl::StrCat("request '", id, "': sampling failed: ",
                                         tokens[r].status().message()));
      }
      const sampling::SampledToken& t = *tokens[r];
      records[static_cast<size_t>(i)]->output.push_back(t.token_id);
      control::v1::SequenceResult* out = result.add_sequences();
      out->set_request_id(id);
      out->add_token_ids(static_cast<uint32_t>(t.token_id));
      if (params[static_cast<size_t>(i)].logprobs) {
        epserve::v1::TokenLogprob* lp = out->add_logprobs();
        lp->set_token_id(static_cast<uint32_t>(t.token_id));
        lp->set_logprob(t.logprob.value_or(0.0f));
        for (const sampling::TokenLogprob& top : t.top_logprobs) {
          epserve::v1::TopLogprob* tl = lp->add_top_logprobs();
          tl->set_token_id(static_cast<uint32_t>(top.token_id));
          tl->set_logprob(top.logprob);
        }
      }
    }
  }
  // The results are on the host: the step's device work (and any exchange
  // in it) has finished.
  RETURN_IF_ERROR(dispatcher.EndStep());
  finish();
  return result;
}

}  // namespace epserve::step
