#include "worker/comm/communicator_factory.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/local_communicator.h"
#ifdef EPSERVE_WITH_NCCL
#include "worker/comm/nccl_communicator.h"
#endif

namespace epserve::comm {

bool NcclBuilt() {
#ifdef EPSERVE_WITH_NCCL
  return true;
#else
  return false;
#endif
}

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
  if (backend == "nccl") {
#ifdef EPSERVE_WITH_NCCL
    NcclOptions nccl;
    nccl.rank = options.rank;
    nccl.world_size = options.world_size;
    nccl.cuda_device = options.cuda_device;
    nccl.key_prefix = options.key_prefix;
    nccl.timeout = options.timeout;
    ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> comm,
                     NcclCommunicator::Create(nccl, rendezvous));
    return std::unique_ptr<Communicator>(std::move(comm));
#else
    return absl::UnimplementedError(
        "collective backend \"nccl\" is not built in this binary (built without CUDA or "
        "NCCL); use gloo");
#endif
  }
  if (options.world_size == 1) return std::make_unique<LocalCommunicator>();
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
