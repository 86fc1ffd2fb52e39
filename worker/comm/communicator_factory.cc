#include "worker/comm/communicator_factory.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/local_communicator.h"

namespace epserve::comm {

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(const CommunicatorOptions& options,
                                                                 Rendezvous& rendezvous) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("CreateCommunicator: rank ", options.rank,
                                                   " of world size ", options.world_size,
                                                   ": expected 0 <= rank < world size"));
  }
  const std::string& backend = options.backend.empty() ? std::string("gloo") : options.backend;
  if (backend != "gloo" && backend != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("collective backend \"", backend, "\" is unknown (known: gloo, nccl)"));
  }
  if (options.world_size == 1) return std::make_unique<LocalCommunicator>();
  if (backend == "nccl") {
    return absl::UnimplementedError(
        "collective backend \"nccl\" is not built: this worker has no NCCL communicator "
        "(use gloo)");
  }
  GlooOptions gloo;
  gloo.rank = options.rank;
  gloo.world_size = options.world_size;
  gloo.hostname = options.hostname;
  gloo.key_prefix = options.key_prefix;
  gloo.timeout = options.timeout;
  ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> comm,
                   GlooCommunicator::Create(gloo, rendezvous));
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace epserve::comm
