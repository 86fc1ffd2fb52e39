// epserve info: server topology and model, as JSON.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "common/flags/flags_util.h"
#include "epserve/v1/epserve.grpc.pb.h"
#include "google/protobuf/util/json_util.h"

namespace epserve::client {
namespace {

constexpr int kDefaultTimeoutS = 10;

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

[[noreturn]] void RpcFailed(const char* what, const std::string& router, const grpc::Status& s) {
  Die(absl::StrCat(what, " at ", router, " failed: ", s.error_message(), " (code ",
                   static_cast<int>(s.error_code()), ")"));
}

}  // namespace

int RunInfo(const ServerOptions& server) {
  const int timeout_s = server.timeout_s > 0 ? server.timeout_s : kDefaultTimeoutS;
  auto stub = v1::Epserve::NewStub(MakeChannel(server));
  v1::GetServerInfoResponse info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(timeout_s));
    grpc::Status s = stub->GetServerInfo(&ctx, {}, &info);
    if (!s.ok()) RpcFailed("GetServerInfo", server.address, s);
  }
  v1::GetModelInfoResponse model;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(timeout_s));
    grpc::Status s = stub->GetModelInfo(&ctx, {}, &model);
    if (!s.ok()) RpcFailed("GetModelInfo", server.address, s);
  }
  std::printf("{\"server\": %s,\n \"model\": %s}\n", ToJson(info).c_str(), ToJson(model).c_str());
  return 0;
}

}  // namespace epserve::client
