#include "router/cluster/worker_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/placement.h"
#include "router/cluster/collective_choice.h"

namespace epserve::router {
namespace {

using control::v1::RegisterRequest;
using control::v1::RegisterResponse;
using control::v1::RouterMessage;

int64_t MillisSince(Clock::time_point then, Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - then).count();
}

}  // namespace

WorkerRegistry::WorkerRegistry(RegistryOptions options, RendezvousStore* store)
    : options_(std::move(options)), store_(store) {
  state_reason_ = absl::StrCat("waiting for ", options_.world_size, " worker(s) to register");
}

void WorkerRegistry::SetServingListener(ServingListener listener) {
  std::lock_guard<std::mutex> lock(mu_);
  listener_ = std::move(listener);
}

void WorkerRegistry::SetStepResultListener(StepResultListener listener) {
  std::lock_guard<std::mutex> lock(mu_);
  step_listener_ = std::move(listener);
}

void WorkerRegistry::OnStepResult(const std::string& worker_id,
                                  const control::v1::StepResult& result) {
  StepResultListener listener;
  uint32_t rank = 0;
  uint64_t epoch = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Worker* w = FindLocked(worker_id);
    if (w == nullptr || w->state != v1::WORKER_STATE_READY) return;
    const int g = GroupRankLocked(w->rank);
    if (g < 0) return;
    rank = static_cast<uint32_t>(g);
    epoch = epoch_;
    listener = step_listener_;
  }
  if (listener) listener(rank, epoch, result);
}

std::optional<WorkerRegistry::ServingGroupInfo> WorkerRegistry::ServingGroup(
    std::string* reason) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != v1::CLUSTER_STATE_SERVING) {
    if (reason != nullptr) *reason = state_reason_;
    return std::nullopt;
  }
  ServingGroupInfo info;
  info.epoch = epoch_;
  for (uint32_t rank : members_) {
    const Worker& w = workers_.at(rank);
    info.kv_block_size = w.loaded->kv_block_size();
    info.kv_blocks.push_back(
        static_cast<int>(w.group_kv_blocks > 0 ? w.group_kv_blocks : w.loaded->kv_num_blocks()));
  }
  return info;
}

absl::Status WorkerRegistry::SendStep(uint64_t epoch,
                                      const std::vector<control::v1::StepPlan>& plans) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != v1::CLUSTER_STATE_SERVING || epoch != epoch_) {
    return absl::UnavailableError(
        state_ == v1::CLUSTER_STATE_SERVING
            ? absl::StrCat("collective group epoch ", epoch, " is gone (now ", epoch_, ")")
            : state_reason_);
  }
  if (plans.size() != members_.size()) {
    return absl::InternalError(absl::StrCat("SendStep: ", plans.size(), " plans for a group of ",
                                            members_.size(), " workers"));
  }
  for (size_t g = 0; g < members_.size(); ++g) {
    RouterMessage msg;
    *msg.mutable_step_plan() = plans[g];
    workers_.at(members_[g]).channel->Send(msg);
  }
  return absl::OkStatus();
}

void WorkerRegistry::Notify(bool was_serving) {
  ServingListener listener;
  bool now_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    now_serving = state_ == v1::CLUSTER_STATE_SERVING;
    listener = listener_;
  }
  if (now_serving != was_serving && listener) listener(now_serving);
}

absl::StatusOr<RegisterResponse> WorkerRegistry::Register(const RegisterRequest& req,
                                                          Clock::time_point now) {
  if (req.protocol_version() != options_.protocol_version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "protocol version mismatch: worker speaks control protocol version ",
        req.protocol_version(), ", this router speaks version ", options_.protocol_version,
        "; run the same epserve release on router and workers"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t rank = 0;
  if (req.requested_rank() >= 0) {
    if (static_cast<uint32_t>(req.requested_rank()) >= options_.world_size) {
      return absl::InvalidArgumentError(absl::StrCat("requested rank ", req.requested_rank(),
                                                     " outside the cluster's world size ",
                                                     options_.world_size));
    }
    rank = static_cast<uint32_t>(req.requested_rank());
    auto it = workers_.find(rank);
    if (it != workers_.end()) {
      return absl::UnavailableError(absl::StrCat(
          "rank ", rank, " is held by worker ", it->second.id, " on ",
          it->second.registration.hostname(), " (last seen ",
          MillisSince(it->second.last_seen, now), " ms ago); retry once it is gone"));
    }
  } else {
    while (rank < options_.world_size && workers_.count(rank)) ++rank;
    if (rank == options_.world_size) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "all ", options_.world_size, " ranks are held by live workers; this worker is not needed"));
    }
  }
  lost_.erase(rank);
  Worker& w = workers_[rank];
  w.id = absl::StrCat("w", ++next_worker_serial_, "-r", rank);
  w.rank = rank;
  w.registration = req;
  w.state = v1::WORKER_STATE_REGISTERED;
  w.last_seen = now;
  LOG_INFO("worker {} registered as rank {}/{} from {} pid {} on {}", w.id, rank,
           options_.world_size, req.hostname(), req.pid(), req.device().device());

  RegisterResponse resp;
  resp.set_worker_id(w.id);
  resp.set_rank(rank);
  resp.set_world_size(options_.world_size);
  *resp.mutable_plan() = options_.plan;
  // auto: chosen per group once every member is known (JoinGroup).
  resp.set_collective_backend(options_.collective_backend == "auto" ? ""
                                                                    : options_.collective_backend);
  resp.set_heartbeat_interval_ms(static_cast<uint32_t>(options_.heartbeat_interval.count()));
  resp.set_collective_timeout_ms(static_cast<uint32_t>(options_.collective_timeout.count()));
  return resp;
}

absl::Status WorkerRegistry::Attach(const std::string& worker_id, WorkerChannel* channel,
                                    Clock::time_point now) {
  bool was_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_serving = state_ == v1::CLUSTER_STATE_SERVING;
    Worker* found = FindLocked(worker_id);
    if (found == nullptr) {
      return absl::NotFoundError(absl::StrCat("unknown worker id '", worker_id,
                                              "' (never registered, or dropped after a "
                                              "timeout); register again"));
    }
    if (found->channel != nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", worker_id, " already has an open stream"));
    }
    found->channel = channel;
    found->state = v1::WORKER_STATE_CONNECTED;
    found->last_seen = now;
    LOG_INFO("worker {} (rank {}) connected", worker_id, found->rank);
    MaybeFormGroupLocked(now);
  }
  Notify(was_serving);
  return absl::OkStatus();
}

WorkerRegistry::Worker* WorkerRegistry::FindLocked(const std::string& worker_id) {
  for (auto& [rank, w] : workers_) {
    if (w.id == worker_id) return &w;
  }
  return nullptr;
}

void WorkerRegistry::Touch(const std::string& worker_id, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Worker* w = FindLocked(worker_id)) w->last_seen = now;
}

void WorkerRegistry::OnModelLoaded(const std::string& worker_id,
                                   const control::v1::ModelLoaded& loaded, Clock::time_point now) {
  bool was_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_serving = state_ == v1::CLUSTER_STATE_SERVING;
    Worker* w = FindLocked(worker_id);
    if (w == nullptr) return;
    w->last_seen = now;
    w->loaded = loaded;
    LOG_INFO("worker {} (rank {}) loaded {} bytes of {} weights ({} local experts) in {:.2f} s",
             worker_id, w->rank, loaded.weight_bytes(), loaded.weight_dtype(),
             loaded.local_experts_size(), loaded.load_seconds());
    MaybeFormGroupLocked(now);
  }
  Notify(was_serving);
}

void WorkerRegistry::OnFatal(const std::string& worker_id, const std::string& error,
                             Clock::time_point now) {
  bool was_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_serving = state_ == v1::CLUSTER_STATE_SERVING;
    Worker* w = FindLocked(worker_id);
    if (w == nullptr) return;
    LOG_ERROR("worker {} (rank {}) failed: {}", worker_id, w->rank, error);
    w->fatal_error = error;
    RemoveLocked(w->rank, "it reported a fatal error", now);
  }
  Notify(was_serving);
}

void WorkerRegistry::OnGroupReady(const std::string& worker_id,
                                  const control::v1::GroupReady& ready, Clock::time_point now) {
  bool was_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_serving = state_ == v1::CLUSTER_STATE_SERVING;
    Worker* found = FindLocked(worker_id);
    if (found == nullptr) return;
    found->last_seen = now;
    if (ready.epoch() != epoch_ || !group_pending_) {
      LOG_INFO("ignoring GroupReady for stale epoch {} from {} (current {})", ready.epoch(),
               worker_id, epoch_);
      return;
    }
    if (!ready.ok()) {
      LOG_ERROR("worker {} (rank {}) failed to join group epoch {}: {}", worker_id, found->rank,
                epoch_, ready.error());
      group_pending_ = false;
      if (members_.size() < options_.world_size) failed_members_ = members_;
      for (auto& [rank, w] : workers_) {
        if (w.state == v1::WORKER_STATE_READY) w.state = v1::WORKER_STATE_CONNECTED;
      }
      reform_after_ = now + options_.reform_backoff;
      SetStateLocked(v1::CLUSTER_STATE_FORMING,
                     absl::StrCat("worker ", worker_id, " (rank ", found->rank,
                                  ") failed the collective warm-up: ", ready.error()));
    } else {
      found->state = v1::WORKER_STATE_READY;
      found->warmup_alltoall_bytes = ready.alltoall_bytes();
      found->group_kv_blocks = ready.kv_num_blocks();
      found->group_local_experts.assign(ready.local_experts().begin(), ready.local_experts().end());
      if (ready.experts_loaded() > 0) {
        LOG_INFO("worker {} (rank {}) loaded {} expert(s) to take its part of group epoch {}",
                 worker_id, found->rank, ready.experts_loaded(), epoch_);
      }
      bool all_ready = true;
      for (uint32_t rank : members_) {
        all_ready = all_ready && workers_.at(rank).state == v1::WORKER_STATE_READY;
      }
      if (all_ready) {
        group_pending_ = false;
        ++groups_formed_total_;
        LOG_INFO("collective group epoch {} formed with {} worker(s); SERVING", epoch_,
                 members_.size());
        std::string reason;
        if (members_.size() < options_.world_size) {
          std::vector<uint32_t> missing;
          for (uint32_t r = 0; r < options_.world_size; ++r) {
            if (GroupRankLocked(r) < 0) missing.push_back(r);
          }
          reason = absl::StrCat("serving on ", members_.size(), " of ", options_.world_size,
                                " workers (rank ", absl::StrJoin(missing, ", "),
                                " missing); the full group forms again when they are back");
        }
        SetStateLocked(v1::CLUSTER_STATE_SERVING, std::move(reason));
      }
    }
  }
  Notify(was_serving);
}

void WorkerRegistry::Detach(const std::string& worker_id, const std::string& reason,
                            Clock::time_point now) {
  bool was_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_serving = state_ == v1::CLUSTER_STATE_SERVING;
    for (auto& [rank, w] : workers_) {
      if (w.id == worker_id) {
        w.channel = nullptr;  // the stream is gone: never Close() it
        RemoveLocked(rank, reason, now);
        break;
      }
    }
  }
  Notify(was_serving);
}

void WorkerRegistry::Sweep(Clock::time_point now) {
  bool was_serving;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was_serving = state_ == v1::CLUSTER_STATE_SERVING;
    std::vector<std::pair<uint32_t, std::string>> lost;
    for (auto& [rank, w] : workers_) {
      int64_t silent = MillisSince(w.last_seen, now);
      if (silent > options_.worker_timeout.count()) {
        lost.emplace_back(rank, w.channel == nullptr
                                    ? absl::StrCat("registered but never opened its stream within ",
                                                   options_.worker_timeout.count(), " ms")
                                    : absl::StrCat("silent for ", silent, " ms (limit ",
                                                   options_.worker_timeout.count(), " ms)"));
      }
    }
    for (const auto& [rank, reason] : lost) RemoveLocked(rank, reason, now);
    if (reform_after_ && now >= *reform_after_) {
      reform_after_.reset();
      MaybeFormGroupLocked(now);
    } else if (!reform_after_ && !GroupUpLocked() && missing_since_) {
      MaybeFormGroupLocked(now);  // survivors, once the grace has passed
    }
  }
  Notify(was_serving);
}

void WorkerRegistry::ShutdownAll(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  RouterMessage msg;
  msg.mutable_shutdown()->set_reason(reason);
  for (auto& [rank, w] : workers_) {
    if (w.channel != nullptr) w.channel->Send(msg);
  }
  SetStateLocked(v1::CLUSTER_STATE_DRAINING, reason);
}

bool WorkerRegistry::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_ == v1::CLUSTER_STATE_SERVING;
}

uint64_t WorkerRegistry::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return epoch_;
}

uint64_t WorkerRegistry::workers_lost_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_lost_total_;
}

uint64_t WorkerRegistry::groups_formed_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return groups_formed_total_;
}

void WorkerRegistry::NoteRankMissing(uint32_t rank, const std::string& reason,
                                     Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (workers_.count(rank) == 0) lost_[rank] = Lost{reason, now};
}

void WorkerRegistry::FillServerInfo(v1::GetServerInfoResponse* info, Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  info->set_state(state_);
  info->set_state_reason(state_reason_);
  info->set_world_size(options_.world_size);
  for (uint32_t rank = 0; rank < options_.world_size; ++rank) {
    if (workers_.count(rank) > 0) continue;
    v1::MissingRank* missing = info->add_missing_ranks();
    missing->set_rank(rank);
    if (auto it = lost_.find(rank); it != lost_.end()) {
      missing->set_reason(it->second.reason);
      missing->set_lost_ms_ago(
          static_cast<uint64_t>(std::max<int64_t>(0, MillisSince(it->second.at, now))));
    }
  }
  info->set_group_epoch(epoch_);
  for (const auto& [rank, w] : workers_) {
    v1::WorkerInfo* wi = info->add_workers();
    wi->set_worker_id(w.id);
    wi->set_rank(rank);
    wi->set_hostname(w.registration.hostname());
    wi->set_pid(w.registration.pid());
    wi->set_metrics_address(w.registration.metrics_address());
    *wi->mutable_device() = w.registration.device();
    wi->set_state(w.state);
    wi->set_last_seen_ms_ago(static_cast<uint64_t>(std::max<int64_t>(0, MillisSince(w.last_seen, now))));
    wi->set_warmup_alltoall_bytes(w.warmup_alltoall_bytes);
    wi->set_collective_backend(group_backend_.empty() ? options_.collective_backend
                                                      : group_backend_);
    if (w.loaded) {
      wi->set_weight_dtype(w.loaded->weight_dtype());
      wi->set_weight_bytes(w.loaded->weight_bytes());
      if (w.state == v1::WORKER_STATE_READY && !w.group_local_experts.empty()) {
        wi->mutable_local_experts()->Assign(w.group_local_experts.begin(),
                                            w.group_local_experts.end());
      } else {
        *wi->mutable_local_experts() = w.loaded->local_experts();
      }
      wi->set_kv_blocks_total(w.state == v1::WORKER_STATE_READY && w.group_kv_blocks > 0
                                  ? w.group_kv_blocks
                                  : w.loaded->kv_num_blocks());
      wi->set_kv_block_size(w.loaded->kv_block_size());
    }
  }
}

void WorkerRegistry::RemoveLocked(uint32_t rank, const std::string& reason, Clock::time_point now) {
  auto it = workers_.find(rank);
  if (it == workers_.end()) return;
  Worker& w = it->second;
  if (state_ == v1::CLUSTER_STATE_DRAINING) {
    LOG_INFO("worker {} (rank {}) left: {}", w.id, rank, reason);
  } else {
    LOG_WARN("worker {} (rank {}, {} pid {}) lost: {}", w.id, rank, w.registration.hostname(),
             w.registration.pid(), reason);
  }
  if (w.channel != nullptr) {
    w.channel->Close(absl::UnavailableError(absl::StrCat("worker declared lost: ", reason)));
  }
  std::string who = absl::StrCat("worker ", w.id, " (rank ", rank, " on ",
                                 w.registration.hostname(), ")");
  std::string why = w.fatal_error.empty() ? reason : absl::StrCat(w.fatal_error, " (", reason, ")");
  const bool group_up = GroupUpLocked();
  const bool member = GroupRankLocked(rank) >= 0;
  workers_.erase(it);
  lost_[rank] = Lost{absl::StrCat(who, " lost: ", why), now};
  ++workers_lost_total_;
  if (!missing_since_) missing_since_ = now;
  if (group_up && !member) return;  // not in the group (a replacement still loading)
  // The group that included this worker is gone; survivors go back to
  // CONNECTED and join a new group once the rank is filled again.
  ++epoch_;
  group_pending_ = false;
  reform_after_.reset();
  for (auto& [r, other] : workers_) {
    if (other.state == v1::WORKER_STATE_READY) other.state = v1::WORKER_STATE_CONNECTED;
  }
  if (state_ != v1::CLUSTER_STATE_DRAINING) {
    SetStateLocked(v1::CLUSTER_STATE_DEGRADED,
                   absl::StrCat(who, " lost: ", why, "; waiting for a replacement"));
  }
}

bool WorkerRegistry::GroupUpLocked() const {
  return state_ == v1::CLUSTER_STATE_SERVING || group_pending_;
}

int WorkerRegistry::GroupRankLocked(uint32_t rank) const {
  auto it = std::find(members_.begin(), members_.end(), rank);
  return it == members_.end() ? -1 : static_cast<int>(it - members_.begin());
}

void WorkerRegistry::MaybeFormGroupLocked(Clock::time_point now) {
  if (state_ == v1::CLUSTER_STATE_DRAINING) return;
  std::vector<uint32_t> members;
  for (const auto& [rank, w] : workers_) {
    if (w.channel != nullptr && w.loaded.has_value()) members.push_back(rank);
  }
  const bool full = members.size() == options_.world_size;
  if (!full) {
    // Survivors: only after a loss, once the grace has passed, and not the
    // group that serves (or is forming) or that failed.
    if (members.empty() || !missing_since_ || options_.survivor_grace.count() < 0 ||
        now < *missing_since_ + options_.survivor_grace) {
      return;
    }
    if (members == failed_members_) return;
    // Not the group up (serving or forming) again, nor a smaller one.
    if (GroupUpLocked() && members.size() <= members_.size()) return;
  }
  std::vector<CollectiveCandidate> candidates;
  for (uint32_t rank : members) {
    const Worker& w = workers_.at(rank);
    CollectiveCandidate c;
    c.rank = rank;
    c.worker_id = w.id;
    c.hostname = w.registration.hostname();
    c.device = w.registration.device().device();
    c.backends.assign(w.registration.capabilities().collective_backends().begin(),
                      w.registration.capabilities().collective_backends().end());
    candidates.push_back(std::move(c));
  }
  absl::StatusOr<std::string> backend =
      ChooseCollectiveBackend(options_.collective_backend, candidates);
  v1::ExpertPlacement placement;
  if (backend.ok() && !options_.plan.expert_placement().expert_to_rank().empty()) {
    const auto& table = options_.plan.expert_placement().expert_to_rank();
    absl::StatusOr<std::vector<uint32_t>> placed =
        PlaceOnMembers(std::vector<uint32_t>(table.begin(), table.end()), members);
    if (placed.ok()) {
      placement.set_strategy(full ? options_.plan.expert_placement().strategy() : "survivors");
      placement.mutable_expert_to_rank()->Assign(placed->begin(), placed->end());
    } else {
      backend = placed.status();
    }
  }
  if (!backend.ok()) {
    // Retried when membership changes (a worker replaced by another).
    LOG_ERROR("cannot form a collective group: {}", backend.status().message());
    if (!full) failed_members_ = members;
    SetStateLocked(v1::CLUSTER_STATE_FORMING,
                   absl::StrCat("cannot form a collective group: ", backend.status().message()));
    return;
  }
  if (full) {
    missing_since_.reset();
    failed_members_.clear();
  }
  group_backend_ = *backend;
  ++epoch_;
  group_pending_ = true;
  members_ = members;
  store_->RetainOnly(RendezvousStore::EpochPrefix(epoch_));
  if (full) {
    LOG_INFO("all {} worker(s) connected; forming collective group epoch {} over {}",
             members_.size(), epoch_, group_backend_);
  } else {
    LOG_WARN("forming collective group epoch {} over {} on the {} surviving worker(s) (ranks {})",
             epoch_, group_backend_, members_.size(), absl::StrJoin(members_, ", "));
  }
  for (auto& [rank, w] : workers_) {
    if (w.state == v1::WORKER_STATE_READY) w.state = v1::WORKER_STATE_CONNECTED;
  }
  for (size_t g = 0; g < members_.size(); ++g) {
    Worker& w = workers_.at(members_[g]);
    w.state = v1::WORKER_STATE_CONNECTED;
    w.warmup_alltoall_bytes = 0;
    w.group_kv_blocks = 0;
    w.group_local_experts.clear();
    RouterMessage msg;
    control::v1::JoinGroup* join = msg.mutable_join_group();
    join->set_epoch(epoch_);
    join->set_rank(static_cast<uint32_t>(g));
    join->set_world_size(static_cast<uint32_t>(members_.size()));
    join->set_collective_backend(group_backend_);
    *join->mutable_expert_placement() = placement;
    join->mutable_member_ranks()->Assign(members_.begin(), members_.end());
    w.channel->Send(msg);
  }
  SetStateLocked(v1::CLUSTER_STATE_FORMING, absl::StrCat("forming collective group epoch ", epoch_,
                                                         " of ", members_.size(), " worker(s)"));
}

void WorkerRegistry::SetStateLocked(v1::ClusterState state, std::string reason) {
  state_ = state;
  state_reason_ = std::move(reason);
}

}  // namespace epserve::router
