#include "worker/comm/gloo_communicator.h"

#include <signal.h>

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoallv.h"
#include "gloo/barrier.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"

namespace epserve::comm {
namespace {

// Adapts a Rendezvous (non-blocking get) to Gloo's blocking Store interface.
// get() and wait() poll until the keys exist or `timeout` passes, then throw
// gloo::IoException, which GlooCommunicator::Create turns into a Status.
class PollingStore final : public gloo::rendezvous::Store {
 public:
  PollingStore(Rendezvous& rendezvous, std::chrono::milliseconds timeout)
      : rendezvous_(rendezvous), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status s = rendezvous_.Set(key, std::string(data.begin(), data.end()));
    if (!s.ok()) throw gloo::IoException(absl::StrCat("rendezvous set ", key, ": ", s.ToString()));
  }

  std::vector<char> get(const std::string& key) override {
    wait({key}, timeout_);
    auto value = rendezvous_.TryGet(key);
    if (!value.ok() || !value->has_value()) {
      throw gloo::IoException(absl::StrCat("rendezvous get ", key, " failed"));
    }
    return std::vector<char>((*value)->begin(), (*value)->end());
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    auto deadline = std::chrono::steady_clock::now() + std::min(timeout, timeout_);
    auto backoff = std::chrono::milliseconds(2);
    for (const std::string& key : keys) {
      while (true) {
        auto value = rendezvous_.TryGet(key);
        if (!value.ok()) {
          throw gloo::IoException(
              absl::StrCat("rendezvous get ", key, ": ", value.status().ToString()));
        }
        if (value->has_value()) break;
        if (std::chrono::steady_clock::now() >= deadline) {
          throw gloo::IoException(absl::StrCat("timed out after ", timeout_.count(),
                                               " ms waiting for rendezvous key ", key,
                                               " (a rank did not join)"));
        }
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
      }
    }
  }

 private:
  Rendezvous& rendezvous_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

namespace {

// Gloo's TCP transport writes with plain write(): a peer that goes away mid
// exchange would raise SIGPIPE and end the whole process instead of failing
// the collective with EPIPE. Ignored once per process unless the program
// installed a handler of its own.
void IgnoreSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const GlooOptions& options, Rendezvous& rendezvous) {
  IgnoreSigpipe();
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("GlooCommunicator: rank ", options.rank,
                                                   " outside world size ", options.world_size));
  }
  if (options.timeout.count() <= 0) {
    return absl::InvalidArgumentError("GlooCommunicator: timeout must be positive");
  }
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.world_size);
    context->setTimeout(options.timeout);
    PollingStore store(rendezvous, options.timeout);
    gloo::rendezvous::PrefixStore prefixed(options.key_prefix, store);
    context->connectFullMesh(prefixed, device);
    return std::unique_ptr<GlooCommunicator>(
        new GlooCommunicator(context, options.rank, options.world_size, options.timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("forming Gloo group (rank ", options.rank, " of ",
                                               options.world_size, ", host ", options.hostname,
                                               "): ", e.what()));
  }
}

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context, int rank,
                                   int world_size, std::chrono::milliseconds timeout)
    : context_(std::move(context)), rank_(rank), world_size_(world_size), timeout_(timeout) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::CheckUsable(const char* op, void* stream) const {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": communicator unusable after an earlier failure: ", broken_));
  }
  if (stream != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": the Gloo communicator works on host buffers; stream must be null"));
  }
  return absl::OkStatus();
}

template <typename Fn>
absl::Status GlooCommunicator::Run(const char* op, Fn&& fn) {
  try {
    fn(next_tag_++);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    broken_ = absl::StrCat(op, " failed: ", e.what());
    LOG_ERROR("rank {}: {}", rank_, broken_);
    std::string what = e.what();
    bool timeout = what.find("imed out") != std::string::npos;
    return timeout ? absl::DeadlineExceededError(broken_) : absl::UnavailableError(broken_);
  }
}

absl::Status GlooCommunicator::AllToAllV(const void* send, absl::Span<const int64_t> send_counts,
                                         void* recv, absl::Span<const int64_t> recv_counts,
                                         size_t element_size, void* stream) {
  RETURN_IF_ERROR(CheckUsable("AllToAllV", stream));
  if (send_counts.size() != static_cast<size_t>(world_size_) ||
      recv_counts.size() != static_cast<size_t>(world_size_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AllToAllV: expected ", world_size_, " counts per side, got ", send_counts.size(),
        " send and ", recv_counts.size(), " recv"));
  }
  for (int r = 0; r < world_size_; ++r) {
    if (send_counts[r] < 0 || recv_counts[r] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: negative count for rank ", r));
    }
  }
  // Gloo counts in elements of its template type; bytes keep this dtype-free.
  std::vector<int64_t> send_bytes(send_counts.begin(), send_counts.end());
  std::vector<int64_t> recv_bytes(recv_counts.begin(), recv_counts.end());
  for (auto& c : send_bytes) c *= static_cast<int64_t>(element_size);
  for (auto& c : recv_bytes) c *= static_cast<int64_t>(element_size);
  // Gloo wants non-null buffers even when nothing moves.
  uint8_t dummy_send = 0, dummy_recv = 0;
  auto* in = send != nullptr ? static_cast<uint8_t*>(const_cast<void*>(send)) : &dummy_send;
  auto* out = recv != nullptr ? static_cast<uint8_t*>(recv) : &dummy_recv;
  return Run("AllToAllV", [&](uint32_t tag) {
    gloo::AlltoallvOptions opts(context_);
    opts.setInput(in, send_bytes);
    opts.setOutput(out, recv_bytes);
    opts.setTag(tag);
    opts.setTimeout(timeout_);
    gloo::alltoallv(opts);
  });
}

absl::Status GlooCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                         void* stream) {
  RETURN_IF_ERROR(CheckUsable("AllGather", stream));
  if (bytes_per_rank == 0) return absl::OkStatus();
  return Run("AllGather", [&](uint32_t tag) {
    gloo::AllgatherOptions opts(context_);
    opts.setInput(static_cast<uint8_t*>(const_cast<void*>(send)), bytes_per_rank);
    opts.setOutput(static_cast<uint8_t*>(recv), bytes_per_rank * world_size_);
    opts.setTag(tag);
    opts.setTimeout(timeout_);
    gloo::allgather(opts);
  });
}

absl::Status GlooCommunicator::AllReduceSum(void* data, size_t count, DataType type,
                                            void* stream) {
  RETURN_IF_ERROR(CheckUsable("AllReduceSum", stream));
  if (count == 0) return absl::OkStatus();
  auto run = [&](auto* typed) {
    using T = std::remove_pointer_t<decltype(typed)>;
    return Run("AllReduceSum", [&](uint32_t tag) {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(typed, count);
      opts.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::allreduce(opts);
    });
  };
  switch (type) {
    case DataType::kFloat32:
      return run(static_cast<float*>(data));
    case DataType::kInt32:
      return run(static_cast<int32_t*>(data));
    case DataType::kInt64:
      return run(static_cast<int64_t*>(data));
    default:
      return absl::UnimplementedError(
          absl::StrCat("AllReduceSum on Gloo supports float32, int32 and int64, not ",
                       DataTypeName(type)));
  }
}

absl::Status GlooCommunicator::Barrier() {
  RETURN_IF_ERROR(CheckUsable("Barrier", nullptr));
  return Run("Barrier", [&](uint32_t tag) {
    gloo::BarrierOptions opts(context_);
    opts.setTag(tag);
    opts.setTimeout(timeout_);
    gloo::barrier(opts);
  });
}

}  // namespace epserve::comm
