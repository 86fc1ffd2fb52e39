// absl::Status <-> grpc::Status (the codes are numerically identical).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace epserve::rpc {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace epserve::rpc
