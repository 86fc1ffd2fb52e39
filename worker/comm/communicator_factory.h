// Creates the Communicator of a collective group for the backend the router
// negotiated at registration (control.proto RegisterResponse.collective_backend).
//
//   world_size 1        ─► LocalCommunicator (whatever the backend)
//   "gloo" (or empty)   ─► GlooCommunicator over `rendezvous` (CPU buffers, TCP)
//   "nccl"              ─► Unimplemented (no NCCL communicator in this build)
//   anything else       ─► InvalidArgument listing the known backends
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
};

// Forms this rank's side of the group; blocks until every rank joined or
// `options.timeout` passed (backends with peers). `rendezvous` is used only
// while forming the group.
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const CommunicatorOptions& options,
                                                                 Rendezvous& rendezvous);

}  // namespace epserve::comm
