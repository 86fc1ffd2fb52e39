#include "router/cluster/collective_choice.h"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace epserve::router {
namespace {

bool Offers(const CollectiveCandidate& w, const std::string& backend) {
  if (w.backends.empty()) return backend == "gloo";
  return std::find(w.backends.begin(), w.backends.end(), backend) != w.backends.end();
}

std::string Describe(const CollectiveCandidate& w) {
  return absl::StrCat("worker ", w.worker_id, " (rank ", w.rank, " on ", w.hostname, ", ",
                      w.device.empty() ? "unknown device" : w.device, ")");
}

// The first worker that does not offer `backend`, if any.
const CollectiveCandidate* Lacking(const std::vector<CollectiveCandidate>& workers,
                                   const std::string& backend) {
  for (const CollectiveCandidate& w : workers) {
    if (!Offers(w, backend)) return &w;
  }
  return nullptr;
}

// The first two workers on one (hostname, device), if any.
std::optional<std::pair<const CollectiveCandidate*, const CollectiveCandidate*>> SharingOneDevice(
    const std::vector<CollectiveCandidate>& workers) {
  std::map<std::pair<std::string, std::string>, const CollectiveCandidate*> seen;
  for (const CollectiveCandidate& w : workers) {
    auto [it, inserted] = seen.emplace(std::make_pair(w.hostname, w.device), &w);
    if (!inserted) return std::make_pair(it->second, &w);
  }
  return std::nullopt;
}

}  // namespace

absl::Status ValidateCollectiveBackend(const std::string& requested) {
  if (requested == "auto" || requested == "gloo" || requested == "nccl") return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("collective backend \"", requested,
                                                 "\" is unknown (expected auto, gloo or nccl)"));
}

absl::StatusOr<std::string> ChooseCollectiveBackend(
    const std::string& requested, const std::vector<CollectiveCandidate>& workers) {
  if (absl::Status valid = ValidateCollectiveBackend(requested); !valid.ok()) return valid;
  if (workers.empty()) {
    return absl::InvalidArgumentError("choosing a collective backend for a group of no workers");
  }
  auto offers_list = [](const CollectiveCandidate& w) {
    return w.backends.empty() ? std::string("gloo") : absl::StrJoin(w.backends, ", ");
  };
  if (requested == "nccl" || (requested == "auto" && workers.size() > 1)) {
    const CollectiveCandidate* lacking = Lacking(workers, "nccl");
    auto sharing = SharingOneDevice(workers);
    if (lacking == nullptr && !sharing) return std::string("nccl");
    if (requested == "nccl") {
      if (lacking != nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "--collective-backend=nccl: ", Describe(*lacking), " does not offer nccl (it offers ",
            offers_list(*lacking),
            "; nccl needs a CUDA worker built with NCCL); use --collective-backend=auto or gloo"));
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "--collective-backend=nccl: ", Describe(*sharing->first), " and ",
          Describe(*sharing->second),
          " share one device; NCCL needs one GPU per rank (GPU workers that share a GPU use "
          "gloo: --collective-backend=auto or gloo)"));
    }
  }
  if (const CollectiveCandidate* lacking = Lacking(workers, "gloo")) {
    return absl::FailedPreconditionError(
        absl::StrCat("collective backend gloo: ", Describe(*lacking),
                     " does not offer gloo (it offers ", offers_list(*lacking), ")"));
  }
  return std::string("gloo");
}

}  // namespace epserve::router
