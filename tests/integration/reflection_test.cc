// The router serves gRPC server reflection on the client port: a client can
// list its services and fetch the descriptor of the client API (what grpcurl
// / grpc_cli do). The control plane is not among them.
#include <grpcpp/grpcpp.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace epserve::testing {
namespace {

using grpc::reflection::v1alpha::ServerReflection;
using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;

TEST(Reflection, ListsServicesAndDescribesTheClientApi) {
  auto router = RouterHandle::Start({"--model=" + ConfigOnlyModel(), "--workers=1"});
  ASSERT_NE(router, nullptr);
  auto stub = ServerReflection::NewStub(
      grpc::CreateChannel(router->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ServerReflectionInfo(&ctx);

  ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(stream->Write(list));
  ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::vector<std::string> services;
  for (const auto& s : resp.list_services_response().service()) services.push_back(s.name());
  EXPECT_THAT(services, ::testing::IsSupersetOf({"epserve.v1.Epserve", "grpc.health.v1.Health"}));
  // The control plane has a listener of its own; the client port neither
  // serves nor lists it.
  EXPECT_THAT(services, ::testing::Not(::testing::Contains("epserve.control.v1.Control")));

  ServerReflectionRequest symbol;
  symbol.set_file_containing_symbol("epserve.v1.Epserve");
  ASSERT_TRUE(stream->Write(symbol));
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.has_file_descriptor_response()) << resp.error_response().error_message();
  bool found = false;
  for (const std::string& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    for (const auto& service : file.service()) {
      if (service.name() != "Epserve") continue;
      found = true;
      std::vector<std::string> methods;
      for (const auto& m : service.method()) methods.push_back(m.name());
      EXPECT_THAT(methods, ::testing::IsSupersetOf({"Generate", "Abort", "Tokenize", "Detokenize",
                                                    "GetModelInfo", "GetServerInfo"}));
    }
  }
  EXPECT_TRUE(found);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace epserve::testing
