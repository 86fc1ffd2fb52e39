#include "tools/bench_gpu/model_bench.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/load_format.h"
#include "common/model_config/model_config.h"
#include "common/status.h"
#include "epserve/control/v1/control.pb.h"
#include "kernels/registry.h"
#include "tools/bench_gpu/model_cost.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/attention/attention.h"
#include "worker/step/step_executor.h"
#include "worker/weights/weight_loader.h"

namespace epserve::bench_gpu {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr DataType kWeightDtype = DataType::kBFloat16;
constexpr DataType kKvDtype = DataType::kBFloat16;
constexpr int64_t kGraphMaxBatch = 256;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One sequence as the router would track it: its blocks cover every token it
// will ever hold; `last` is the token it sampled last.
struct Sequence {
  std::string id;
  std::vector<uint32_t> prompt;
  std::vector<uint32_t> blocks;
  int64_t fed = 0;
  uint32_t last = 0;
};

// What one model's benches share.
struct Context {
  step::StepExecutor& executor;
  const ModelBenchOptions& options;
  std::string config;
  std::mt19937_64 gen;
  uint64_t next_request = 0;
  uint64_t next_step = 0;
};

// `count` fresh sequences with random prompts of `prompt_len` tokens and
// blocks for `capacity` tokens each (disjoint, from block 0 up).
std::vector<Sequence> MakeSequences(Context& ctx, int64_t count, int64_t prompt_len,
                                    int64_t capacity) {
  const int64_t blocks_per_seq = kv_cache::BlocksForTokens(capacity, kBlockSize);
  std::uniform_int_distribution<uint32_t> token(
      0, static_cast<uint32_t>(ctx.executor.desc().vocab_size - 1));
  std::vector<Sequence> seqs(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    Sequence& s = seqs[static_cast<size_t>(i)];
    s.id = absl::StrCat("bench-", ctx.next_request++);
    s.prompt.resize(static_cast<size_t>(prompt_len));
    for (uint32_t& t : s.prompt) t = token(ctx.gen);
    for (int64_t b = 0; b < blocks_per_seq; ++b) {
      s.blocks.push_back(static_cast<uint32_t>(i * blocks_per_seq + b));
    }
  }
  return seqs;
}

epserve::v1::SamplingParams Greedy() {
  epserve::v1::SamplingParams p;
  p.set_temperature(0.0f);
  return p;
}

// Feeds prompt tokens [s.fed, s.fed + n) of `s`, or (n == 0) its last
// sampled token.
control::v1::SequencePlan PlanFor(const Sequence& s, int64_t n) {
  control::v1::SequencePlan p;
  p.set_request_id(s.id);
  p.set_start_position(static_cast<uint32_t>(s.fed));
  for (uint32_t b : s.blocks) p.add_block_table(b);
  *p.mutable_sampling_params() = Greedy();
  p.set_num_prompt_tokens(static_cast<uint32_t>(s.prompt.size()));
  if (n == 0) {
    p.add_token_ids(s.last);
    p.set_sample(true);
  } else {
    for (int64_t i = 0; i < n; ++i) p.add_token_ids(s.prompt[static_cast<size_t>(s.fed + i)]);
    p.set_sample(s.fed + n == static_cast<int64_t>(s.prompt.size()));
  }
  return p;
}

// Runs `plan` (its sequences are `members`, in order) and advances them:
// tokens fed, and the sampled token of those that sampled. Adds the wall
// time of Execute() alone to *execute_seconds when given.
absl::Status Step(Context& ctx, control::v1::StepPlan& plan, const std::vector<Sequence*>& members,
                  double* execute_seconds = nullptr) {
  plan.set_step_id(++ctx.next_step);
  const Clock::time_point start = Clock::now();
  absl::StatusOr<control::v1::StepResult> executed = ctx.executor.Execute(plan);
  if (execute_seconds != nullptr) *execute_seconds += SecondsSince(start);
  RETURN_IF_ERROR(executed.status());
  const control::v1::StepResult& result = *executed;
  int next_result = 0;
  for (int i = 0; i < plan.sequences_size(); ++i) {
    const control::v1::SequencePlan& p = plan.sequences(i);
    Sequence& s = *members[static_cast<size_t>(i)];
    s.fed += p.token_ids_size();
    if (!p.sample()) continue;
    if (next_result >= result.sequences_size() ||
        result.sequences(next_result).request_id() != s.id ||
        result.sequences(next_result).token_ids_size() != 1) {
      return absl::InternalError(
          absl::StrCat("step ", plan.step_id(), ": no sampled token for request '", s.id, "'"));
    }
    s.last = result.sequences(next_result++).token_ids(0);
  }
  return absl::OkStatus();
}

// Feeds every prompt, at most max_plan_tokens tokens per plan (a long
// prompt is split into chunks across plans).
absl::Status Prefill(Context& ctx, std::vector<Sequence>& seqs) {
  const int64_t budget = std::max<int64_t>(1, ctx.options.max_plan_tokens);
  control::v1::StepPlan plan;
  std::vector<Sequence*> members;
  int64_t planned = 0;
  for (Sequence& s : seqs) {
    while (s.fed < static_cast<int64_t>(s.prompt.size())) {
      const int64_t n = std::min(static_cast<int64_t>(s.prompt.size()) - s.fed, budget - planned);
      *plan.add_sequences() = PlanFor(s, n);
      members.push_back(&s);
      planned += n;
      if (planned == budget || s.fed + n < static_cast<int64_t>(s.prompt.size())) {
        RETURN_IF_ERROR(Step(ctx, plan, members));
        plan.Clear();
        members.clear();
        planned = 0;
      } else {
        break;  // s is planned to its end; its tokens count once Step runs
      }
    }
  }
  if (plan.sequences_size() > 0) RETURN_IF_ERROR(Step(ctx, plan, members));
  return absl::OkStatus();
}

// One decode step of every sequence.
absl::Status DecodeStep(Context& ctx, std::vector<Sequence>& seqs,
                        double* execute_seconds = nullptr) {
  control::v1::StepPlan plan;
  std::vector<Sequence*> members;
  for (Sequence& s : seqs) {
    *plan.add_sequences() = PlanFor(s, 0);
    members.push_back(&s);
  }
  return Step(ctx, plan, members, execute_seconds);
}

void ReleaseAll(Context& ctx, const std::vector<Sequence>& seqs) {
  for (const Sequence& s : seqs) ctx.executor.Release(s.id);
}

absl::Status RunDecode(Context& ctx, int64_t batch, const WeightBytes& weight_bytes,
                       Report& report) {
  const ModelBenchOptions& o = ctx.options;
  const int64_t prompt_len = o.context - 1;
  const int64_t capacity = prompt_len + o.warmup_steps + o.steps;
  const int64_t needed = batch * kv_cache::BlocksForTokens(capacity, kBlockSize);
  if (needed > ctx.executor.num_blocks()) {
    Line("  decode batch %4d: skipped: needs %d KV blocks, the cache has %d", batch, needed,
         ctx.executor.num_blocks());
    return absl::OkStatus();
  }
  std::vector<Sequence> seqs = MakeSequences(ctx, batch, prompt_len, capacity);
  const Clock::time_point prefill_start = Clock::now();
  absl::Status status = Prefill(ctx, seqs);
  const double prefill_s = SecondsSince(prefill_start);
  for (int64_t i = 0; status.ok() && i < o.warmup_steps; ++i) status = DecodeStep(ctx, seqs);
  // Only the Execute() calls are timed, not building the plans.
  double elapsed = 0;
  for (int64_t i = 0; status.ok() && i < o.steps; ++i) status = DecodeStep(ctx, seqs, &elapsed);
  ReleaseAll(ctx, seqs);
  RETURN_IF_ERROR(status);

  const double step_s = elapsed / static_cast<double>(o.steps);
  const double tokens_per_s = static_cast<double>(batch * o.steps) / elapsed;
  // KV read at the mean context of the timed steps.
  const double mean_context =
      static_cast<double>(prompt_len + o.warmup_steps) + static_cast<double>(o.steps + 1) / 2.0;
  DecodeBytes bytes = DecodeStepBytes(ctx.executor.desc(), weight_bytes, batch,
                                      static_cast<int64_t>(mean_context + 0.5), kKvDtype);
  std::optional<double> ratio;
  std::string roofline = "no bandwidth reference";
  if (o.bandwidth_gb_per_s) {
    const double roofline_s = bytes.total() / (*o.bandwidth_gb_per_s * 1e9);
    ratio = roofline_s / step_s;
    roofline = absl::StrFormat("roofline %.3f ms, ratio %.2f", roofline_s * 1e3, *ratio);
  }
  Line(
      "  decode batch %4d: %8.3f ms/step %9.1f tok/s | reads %.2f GB/step (weights %.2f, "
      "experts %.2f, kv %.2f) | %s | graphs %d, prefill %.1f s",
      batch, step_s * 1e3, tokens_per_s, bytes.total() / 1e9, bytes.weights / 1e9,
      bytes.experts / 1e9, bytes.kv / 1e9, roofline, ctx.executor.num_graphs(), prefill_s);
  report.Add({"decode_tokens_per_s", ctx.config, batch, tokens_per_s, "tok/s", ratio});
  report.Add({"decode_step_ms", ctx.config, batch, step_s * 1e3, "ms", ratio});
  return absl::OkStatus();
}

absl::Status RunPrefill(Context& ctx, int64_t prompt_len, Report& report) {
  const ModelBenchOptions& o = ctx.options;
  const int64_t num_seqs = o.prefill_seqs;
  const int64_t needed = num_seqs * kv_cache::BlocksForTokens(prompt_len, kBlockSize);
  if (needed > ctx.executor.num_blocks()) {
    Line("  prefill %d x %d tokens: skipped: needs %d KV blocks, the cache has %d", num_seqs,
         prompt_len, needed, ctx.executor.num_blocks());
    return absl::OkStatus();
  }
  double best = 0;
  for (int rep = 0; rep <= o.prefill_repetitions; ++rep) {  // rep 0: warm-up
    std::vector<Sequence> seqs = MakeSequences(ctx, num_seqs, prompt_len, prompt_len);
    control::v1::StepPlan plan;
    std::vector<Sequence*> members;
    for (Sequence& s : seqs) {
      *plan.add_sequences() = PlanFor(s, prompt_len);
      members.push_back(&s);
    }
    double t = 0;
    absl::Status status = Step(ctx, plan, members, &t);
    ReleaseAll(ctx, seqs);
    RETURN_IF_ERROR(status);
    if (rep > 0 && (best == 0 || t < best)) best = t;
  }
  const double tokens = static_cast<double>(num_seqs * prompt_len);
  const PrefillFlops flops = PrefillStepFlops(ctx.executor.desc(), num_seqs, prompt_len);
  const double tflops = flops.total() / best / 1e12;
  std::optional<double> ratio;
  std::string peak = "no GEMM reference";
  if (o.gemm_peak_tflops) {
    ratio = tflops / *o.gemm_peak_tflops;
    peak = absl::StrFormat("%.2f of the cuBLAS peak %.0f", *ratio, *o.gemm_peak_tflops);
  }
  Line(
      "  prefill %d x %5d tokens: %8.2f ms %9.0f tok/s | %.2f TFLOP (linear %.2f, lm_head "
      "%.3f, attention %.2f; nominal %.2f) -> %.1f TFLOP/s, %s",
      num_seqs, prompt_len, best * 1e3, tokens / best, flops.total() / 1e12, flops.linear / 1e12,
      flops.lm_head / 1e12, flops.attention / 1e12, flops.nominal / 1e12, tflops, peak);
  report.Add(
      {"prefill_tokens_per_s", ctx.config, num_seqs * prompt_len, tokens / best, "tok/s", ratio});
  report.Add({"prefill_tflops", ctx.config, num_seqs * prompt_len, tflops, "TFLOP/s", ratio});
  return absl::OkStatus();
}

absl::Status CheckOptions(const ModelBenchOptions& o) {
  if (!o.batches.empty()) {
    if (o.context < 2 || o.steps < 1 || o.warmup_steps < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("decode: expected --context >= 2, --steps >= 1, --warmup-steps >= 0; found ",
                       o.context, ", ", o.steps, ", ", o.warmup_steps));
    }
    for (int64_t b : o.batches) {
      if (b < 1) return absl::InvalidArgumentError(absl::StrCat("decode: --batch ", b, " < 1"));
    }
  }
  for (int64_t t : o.prefill_tokens) {
    if (t < 1) return absl::InvalidArgumentError(absl::StrCat("prefill: --tokens ", t, " < 1"));
  }
  if (o.prefill_seqs < 1 || o.prefill_repetitions < 1) {
    return absl::InvalidArgumentError("prefill: expected --seqs >= 1 and repetitions >= 1");
  }
  return absl::OkStatus();
}

}  // namespace

std::string ConfigName(const std::string& model_dir) {
  std::string d = model_dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  const size_t slash = d.rfind('/');
  return slash == std::string::npos ? d : d.substr(slash + 1);
}

absl::Status RunModelBench(const std::string& model_dir, const ModelBenchOptions& options,
                           Report& report) {
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(ModelDescription desc, LoadModelConfig(model_dir));
  const std::string config = ConfigName(model_dir);
  const WeightBytes weight_bytes = CountWeightBytes(desc, kWeightDtype);

  // KV cache: what the largest decode batch and the prefills need, cut to
  // what fits next to the weights and the reserve.
  const int64_t decode_capacity = options.context - 1 + options.warmup_steps + options.steps;
  int64_t wanted = 1;
  for (int64_t b : options.batches) {
    wanted = std::max(wanted, b * kv_cache::BlocksForTokens(decode_capacity, kBlockSize));
  }
  for (int64_t t : options.prefill_tokens) {
    wanted = std::max(wanted, options.prefill_seqs * kv_cache::BlocksForTokens(t, kBlockSize));
  }
  const kv_cache::KvCacheShape kv_shape = models::KvCacheShapeOf(desc);
  const uint64_t block_bytes = step::KvBlockBytes(kv_shape, kBlockSize, kKvDtype);
  ASSIGN_OR_RETURN(kernels::DeviceProperties props, kernels::QueryDevice(options.device));
  const double spare = static_cast<double>(props.free_memory_bytes) -
                       static_cast<double>(weight_bytes.total_held) -
                       options.reserve_gib * static_cast<double>(1ull << 30);
  const int64_t affordable =
      spare > 0 ? static_cast<int64_t>(spare / static_cast<double>(block_bytes)) : 0;
  // At least one block, so that a model too large to load reaches the
  // loader and fails with its own message.
  const int64_t num_blocks = std::max<int64_t>(1, std::min(wanted, affordable));

  Line("");
  Line("model %s (%s): %d layers, hidden %d, heads %d/%d x %d, vocab %d%s", config,
       desc.architecture, desc.num_layers, desc.hidden_size, desc.num_heads, desc.num_kv_heads,
       desc.head_dim, desc.vocab_size,
       desc.is_moe() ? absl::StrFormat(", %d MoE layers x %d experts top-%d width %d",
                                       desc.num_moe_layers(), desc.moe.num_experts,
                                       desc.moe.routing.top_k, desc.moe.moe_intermediate_size)
                     : std::string());
  Line(
      "  bf16 weights %.2f GB (read every decode step %.2f GB, one expert %.1f MB); KV cache "
      "%d blocks x %d tokens = %.2f GB (wanted %d); %.2f GB free",
      static_cast<double>(weight_bytes.total_held) / 1e9,
      static_cast<double>(weight_bytes.every_step) / 1e9,
      static_cast<double>(weight_bytes.per_expert) / 1e6, num_blocks, kBlockSize,
      static_cast<double>(num_blocks) * static_cast<double>(block_bytes) / 1e9, wanted,
      static_cast<double>(props.free_memory_bytes) / 1e9);

  weights::LoadOptions load;
  load.format = checkpoint::LoadFormat::kDummy;
  load.dtype = "bfloat16";
  load.seed = options.seed;
  load.backend = "cuda";
  step::StepExecutorOptions exec;
  exec.device = options.device;
  exec.block_size = kBlockSize;
  exec.num_blocks = num_blocks;
  exec.kv_cache_dtype = kKvDtype;
  exec.graph_max_batch = options.eager ? 0 : kGraphMaxBatch;
  exec.graph_max_context =
      std::max<int64_t>(4096, kv_cache::BlocksForTokens(decode_capacity, kBlockSize) * kBlockSize);
  const Clock::time_point load_start = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<step::StepExecutor> executor,
                   step::StepExecutor::Load(model_dir, load, exec));
  Line("  loaded in %.1f s (%s)", SecondsSince(load_start),
       options.eager ? "eager" : absl::StrCat("graphs up to batch ", kGraphMaxBatch));

  Context ctx{*executor, options, config, std::mt19937_64(options.seed), 0, 0};
  for (int64_t batch : options.batches) {
    absl::Status s = RunDecode(ctx, batch, weight_bytes, report);
    if (!s.ok()) Line("  decode batch %4d: error: %s", batch, s.ToString());
  }
  for (int64_t len : options.prefill_tokens) {
    absl::Status s = RunPrefill(ctx, len, report);
    if (!s.ok())
      Line("  prefill %d x %d tokens: error: %s", options.prefill_seqs, len, s.ToString());
  }
  return absl::OkStatus();
}

}  // namespace epserve::bench_gpu
