// Which collective backend a group of workers uses, from the router's
// --collective-backend and what each worker offers at registration
// (RegisterRequest.capabilities.collective_backends, hostname, device).
//
//   requested  workers                                             choice
//   gloo       all offer gloo                                      gloo
//   nccl       all offer nccl, no two on one (hostname, device)    nccl
//   auto       2+ workers, all offer nccl, no two on one GPU       nccl
//   auto       otherwise (also a group of one: nothing to exchange) gloo
//
// NCCL needs one GPU per rank, so workers that share a GPU use Gloo. A worker
// that lists no backends is taken to offer gloo only (older workers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace epserve::router {

struct CollectiveCandidate {
  uint32_t rank = 0;
  std::string worker_id;
  std::string hostname;
  std::string device;                 // "cpu", "cuda:1"
  std::vector<std::string> backends;  // what the worker offers
};

// INVALID_ARGUMENT for a `requested` other than auto, gloo or nccl.
absl::Status ValidateCollectiveBackend(const std::string& requested);

// The backend of the group, or FAILED_PRECONDITION naming the worker that
// lacks the backend, or the workers that share a GPU.
absl::StatusOr<std::string> ChooseCollectiveBackend(
    const std::string& requested, const std::vector<CollectiveCandidate>& workers);

}  // namespace epserve::router
