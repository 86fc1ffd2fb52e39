// The router's view of its workers: registration, rank assignment, liveness,
// and formation of the collective group. A plain object with no gRPC in it:
// the control service feeds it events, and it talks back to workers through
// the WorkerChannel interface, so it is tested with fake channels.
//
//   Register ──► REGISTERED ──Attach──► CONNECTED ──ModelLoaded──►
//   (all N connected and loaded) JoinGroup(epoch) to every worker
//   ──GroupReady(epoch, ok) from all──► READY × N ──► cluster SERVING
//
// Losing a worker of the group (stream closed, or silent for
// `worker_timeout`) makes the cluster DEGRADED and invalidates the group
// (epoch+1). When the rank is filled again, every worker joins a fresh group;
// when it stays empty for `survivor_grace`, the survivors form a group of
// their own (group ranks 0..n-1 in rank order, the lost ranks' experts
// re-placed on them: common/placement.h PlaceOnMembers), and the full group
// forms again once the missing ranks are back and loaded. A worker outside
// the serving group (a replacement still loading) comes and goes without
// disturbing it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "epserve/control/v1/control.pb.h"
#include "epserve/v1/epserve.pb.h"
#include "router/cluster/rendezvous_store.h"

namespace epserve::router {

using Clock = std::chrono::steady_clock;

// The router's end of one worker's step stream.
class WorkerChannel {
 public:
  virtual ~WorkerChannel() = default;
  // Queues a message; never blocks on the network.
  virtual void Send(const control::v1::RouterMessage& message) = 0;
  // Ends the stream with `status` (e.g. after a liveness timeout).
  virtual void Close(const absl::Status& status) = 0;
};

struct RegistryOptions {
  uint32_t world_size = 1;
  unsigned protocol_version = 0;
  // A worker silent for this long (no heartbeat or message) is declared lost.
  std::chrono::milliseconds worker_timeout{3000};
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds collective_timeout{10000};
  // After a failed group formation, wait this long before trying again.
  std::chrono::milliseconds reform_backoff{1000};
  // A rank missing this long after a loss: the survivors form a group
  // without it. Negative: never (the group waits for a replacement).
  std::chrono::milliseconds survivor_grace{3000};
  // --collective-backend: auto | gloo | nccl (router/cluster/collective_choice.h).
  std::string collective_backend = "auto";
  control::v1::ModelPlan plan;  // the same for every worker
};

class WorkerRegistry {
 public:
  // Called (outside the registry lock) whenever SERVING starts or stops.
  using ServingListener = std::function<void(bool serving)>;

  WorkerRegistry(RegistryOptions options, RendezvousStore* store);

  void SetServingListener(ServingListener listener);

  // Called (outside the registry lock) with every StepResult of a worker in
  // the current group, with its group rank and the group's epoch.
  using StepResultListener =
      std::function<void(uint32_t rank, uint64_t epoch, const control::v1::StepResult& result)>;
  void SetStepResultListener(StepResultListener listener);
  void OnStepResult(const std::string& worker_id, const control::v1::StepResult& result);

  // The serving group: epoch, KV block size and each group rank's KV block
  // count (from GroupReady, else ModelLoaded). nullopt with *reason set when
  // not SERVING.
  struct ServingGroupInfo {
    uint64_t epoch = 0;
    uint32_t kv_block_size = 0;
    std::vector<int> kv_blocks;
  };
  std::optional<ServingGroupInfo> ServingGroup(std::string* reason) const;
  // Sends plans[g] to group rank g when `epoch` is still the serving group;
  // UNAVAILABLE (sending nothing) otherwise.
  absl::Status SendStep(uint64_t epoch, const std::vector<control::v1::StepPlan>& plans);

  // Assigns a rank and returns the worker's plan. Errors:
  //   FAILED_PRECONDITION  protocol version mismatch (names both versions)
  //   RESOURCE_EXHAUSTED   every rank is held by a live worker
  //   UNAVAILABLE          the requested rank is held by a live worker
  //   INVALID_ARGUMENT     requested rank outside [0, world_size)
  absl::StatusOr<control::v1::RegisterResponse> Register(const control::v1::RegisterRequest& req,
                                                         Clock::time_point now);

  // The worker opened its stream (first message `hello`). NOT_FOUND for an
  // unknown or expired worker id; FAILED_PRECONDITION if already attached.
  absl::Status Attach(const std::string& worker_id, WorkerChannel* channel,
                      Clock::time_point now);

  // Any message from the worker (heartbeats included) proves it is alive.
  void Touch(const std::string& worker_id, Clock::time_point now);

  void OnGroupReady(const std::string& worker_id, const control::v1::GroupReady& ready,
                    Clock::time_point now);

  // The worker holds its weights; the group forms once every worker does.
  void OnModelLoaded(const std::string& worker_id, const control::v1::ModelLoaded& loaded,
                     Clock::time_point now);

  // The worker reported an error it cannot recover from: it is removed at
  // once (its stream closed) with the error as the reason.
  void OnFatal(const std::string& worker_id, const std::string& error,
               Clock::time_point now = Clock::now());

  // The worker's stream ended. The channel must not be used afterwards:
  // Detach returns only when no Send to it is in progress.
  void Detach(const std::string& worker_id, const std::string& reason,
              Clock::time_point now = Clock::now());

  // Declares silent workers lost, drops workers that registered but never
  // attached, and retries a failed group formation. Call periodically.
  void Sweep(Clock::time_point now);

  // Sends Shutdown to every attached worker.
  void ShutdownAll(const std::string& reason);

  // Records why `rank` has no worker, when the router knows more than the
  // loss of its stream (a local worker's exit code and error). Shown in
  // GetServerInfo's missing_ranks until a worker registers for the rank.
  void NoteRankMissing(uint32_t rank, const std::string& reason,
                       Clock::time_point now = Clock::now());

  bool serving() const;
  uint64_t epoch() const;
  // Monotonic counts for metrics.
  uint64_t workers_lost_total() const;
  uint64_t groups_formed_total() const;
  // Fills state, reason, world size, epoch and workers.
  void FillServerInfo(v1::GetServerInfoResponse* info, Clock::time_point now) const;

 private:
  struct Worker {
    std::string id;
    uint32_t rank = 0;
    control::v1::RegisterRequest registration;
    v1::WorkerState state = v1::WORKER_STATE_REGISTERED;
    WorkerChannel* channel = nullptr;
    Clock::time_point last_seen;
    uint64_t warmup_alltoall_bytes = 0;
    std::optional<control::v1::ModelLoaded> loaded;
    std::string fatal_error;
    // From its GroupReady for the current group (0 / empty: as loaded).
    uint32_t group_kv_blocks = 0;
    std::vector<uint32_t> group_local_experts;
  };

  Worker* FindLocked(const std::string& worker_id);

  // *Locked helpers expect mu_ held.
  void RemoveLocked(uint32_t rank, const std::string& reason, Clock::time_point now);
  // Forms the full group when every rank is connected and loaded, else a
  // group of the connected, loaded survivors once a rank has been missing
  // for survivor_grace (not again for the members of one that failed).
  void MaybeFormGroupLocked(Clock::time_point now);
  // Group rank of `rank` in the current (serving or pending) group, or -1.
  int GroupRankLocked(uint32_t rank) const;
  // A group serves or is forming (members_ is it).
  bool GroupUpLocked() const;
  void SetStateLocked(v1::ClusterState state, std::string reason);
  // Called without mu_ after a public method changed state: tells the
  // listener when SERVING started or stopped relative to `was_serving`.
  void Notify(bool was_serving);

  const RegistryOptions options_;
  RendezvousStore* const store_;
  ServingListener listener_;
  StepResultListener step_listener_;

  mutable std::mutex mu_;
  std::map<uint32_t, Worker> workers_;  // by rank
  uint64_t next_worker_serial_ = 0;
  uint64_t epoch_ = 0;
  uint64_t workers_lost_total_ = 0;
  uint64_t groups_formed_total_ = 0;
  // True while JoinGroup(epoch_) is out and not all GroupReady are in.
  bool group_pending_ = false;
  // The registered ranks of the current (serving or pending) group, by
  // group rank.
  std::vector<uint32_t> members_;
  // Since when a rank is missing after a loss (reset when the full group
  // forms), and the members of the last group of survivors that failed.
  std::optional<Clock::time_point> missing_since_;
  std::vector<uint32_t> failed_members_;
  // Ranks whose worker was lost: why and when (until one registers again).
  struct Lost {
    std::string reason;
    Clock::time_point at;
  };
  std::map<uint32_t, Lost> lost_;
  std::optional<Clock::time_point> reform_after_;
  // The backend of the newest group formed or being formed; empty before.
  std::string group_backend_;
  v1::ClusterState state_ = v1::CLUSTER_STATE_FORMING;
  std::string state_reason_;
};

}  // namespace epserve::router
