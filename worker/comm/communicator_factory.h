// Creates the Communicator of a collective group for the backend the router
// negotiated at registration (control.proto RegisterResponse.collective_backend).
//
//   "gloo" (or empty), world size 1 ─► LocalCommunicator (host buffers)
//   "gloo" (or empty)               ─► GlooCommunicator over `rendezvous` (host buffers, TCP)
//   "nccl"                          ─► NcclCommunicator on `cuda_device`, at every world
//                                      size (also 1, so that device buffers work the same
//                                      way); Unimplemented in a binary built without NCCL
//   anything else                   ─► InvalidArgument listing the known backends
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/comm/rendezvous.h"

namespace epserve::comm {

struct CommunicatorOptions {
  // "gloo" or "nccl"; empty (a router that does not name one) means "gloo".
  std::string backend;
  int rank = 0;
  int world_size = 1;
  // Address other ranks reach this one on (IP or resolvable name).
  std::string hostname = "127.0.0.1";
  // Scopes rendezvous keys, e.g. "epoch/3/": a re-formed group never sees
  // the keys of an earlier one.
  std::string key_prefix;
  // Limit for forming the group and for every collective.
  std::chrono::milliseconds timeout{10000};
  // "nccl": the CUDA device of this rank (DeviceSpec ordinal); -1: the
  // calling thread's current device. Unused by the other backends.
  int cuda_device = -1;
};

// Whether this binary has the NCCL communicator (built with CUDA and NCCL).
bool NcclBuilt();

// Forms this rank's side of the group; blocks until every rank joined or
// `options.timeout` passed (backends with peers). `rendezvous` is used only
// while forming the group.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const CommunicatorOptions& options,
                                                                 Rendezvous& rendezvous);

}  // namespace epserve::comm
