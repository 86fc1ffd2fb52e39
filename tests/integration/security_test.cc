// The router's two doors as real processes (docs/security.md): the control
// plane answers only callers holding the cluster secret and lives on its own
// port; the client API answers only callers with an API key when keys are
// configured, and a request can be aborted only by the caller that sent it.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/rpc/auth.h"
#include "common/rpc/client_message.h"
#include "tests/integration/cluster_harness.h"

#include "epserve/control/v1/control.grpc.pb.h"

namespace epserve::testing {
namespace {

using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";

std::unique_ptr<control::v1::Control::Stub> ControlStub(const std::string& address) {
  return control::v1::Control::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

void Bounded(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + seconds(5));
}

grpc::Status StoreGet(control::v1::Control::Stub& stub, const std::string& key,
                      const std::string& secret, control::v1::StoreGetResponse* resp) {
  grpc::ClientContext ctx;
  Bounded(&ctx);
  if (!secret.empty()) rpc::AddBearerToken(&ctx, secret);
  control::v1::StoreGetRequest req;
  req.set_key(key);
  return stub.StoreGet(&ctx, req, resp);
}

grpc::Status StoreSet(control::v1::Control::Stub& stub, const std::string& key,
                      const std::string& value, const std::string& secret) {
  grpc::ClientContext ctx;
  Bounded(&ctx);
  if (!secret.empty()) rpc::AddBearerToken(&ctx, secret);
  control::v1::StoreSetRequest req;
  req.set_key(key);
  req.set_value(value);
  control::v1::StoreSetResponse resp;
  return stub.StoreSet(&ctx, req, &resp);
}

std::string WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

TEST(ControlPlane, AnswersOnlyTheClusterSecretAndNeverOnTheClientPort) {
  auto router = RouterHandle::Start({"--model=" + ConfigOnlyModel(), "--workers=1"});
  ASSERT_NE(router, nullptr);
  ASSERT_NE(router->control_address(), router->grpc_address());
  const std::string secret = ReadFile(router->secret_file()).substr(0, 64);
  auto control = ControlStub(router->control_address());

  // Anonymous and wrong-secret store access: refused, nothing read or written.
  control::v1::StoreGetResponse got;
  grpc::Status s = StoreGet(*control, "epoch/1/x", "", &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("requires the cluster secret"));
  s = StoreSet(*control, "epoch/1/x", "forged address", "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  s = StoreSet(*control, "epoch/1/x", "forged address", std::string(64, 'a'));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("wrong cluster secret"));
  EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr(std::string(64, 'a'))));
  // With the secret, the store works; the forged value never landed.
  ASSERT_TRUE(StoreGet(*control, "epoch/1/x", secret, &got).ok());
  EXPECT_FALSE(got.found());
  ASSERT_TRUE(StoreSet(*control, "epoch/1/x", "v", secret).ok());
  ASSERT_TRUE(StoreGet(*control, "epoch/1/x", secret, &got).ok());
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), "v");

  // The step stream refuses an anonymous caller before its first message.
  {
    grpc::ClientContext ctx;
    Bounded(&ctx);
    auto stream = control->Connect(&ctx);
    control::v1::RouterMessage msg;
    EXPECT_FALSE(stream->Read(&msg));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  // The client port does not serve the control plane at all.
  auto on_client_port = ControlStub(router->grpc_address());
  s = StoreGet(*on_client_port, "epoch/1/x", secret, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << s.error_message();

  // A rogue worker without the secret, and one with a wrong secret, are
  // refused at registration and exit; the cluster stays without workers.
  for (const std::string& wrong : {std::string(), std::string("not-the-cluster-secret-at-all")}) {
    std::vector<std::string> args = {"--router=" + router->control_address(),
                                     "--connect-timeout-s=10", "--metrics-listen="};
    if (!wrong.empty()) {
      args.push_back("--cluster-secret-file=" +
                     WriteFile(ScratchDir() + "/wrong_secret", wrong + "\n"));
    }
    RunResult rogue = RunToExit(Binary("epserve-worker"), args, seconds(20));
    EXPECT_EQ(rogue.exit_code, 1) << rogue.output;
    EXPECT_THAT(rogue.output, HasSubstr("refused registration"));
    EXPECT_THAT(rogue.output,
                HasSubstr(wrong.empty() ? "requires the cluster secret" : "wrong cluster secret"));
  }
  EXPECT_EQ(router->Info().workers_size(), 0);
  EXPECT_EQ(router->Info().state(), v1::CLUSTER_STATE_FORMING);
  EXPECT_THAT(router->process().output(), HasSubstr("refused Control.Register from"));
  EXPECT_THAT(router->process().output(), HasSubstr("refused Control.StoreSet from"));
}

// A router with two API keys, serving the tiny model on one local worker.
class ApiKeys : public ::testing::Test {
 protected:
  void SetUp() override {
    key_a_ = std::string(32, 'a');
    key_b_ = std::string(32, 'b');
    const std::string keys = WriteFile(
        ScratchDir() + "/api_keys", absl::StrCat("# two clients\n", key_a_, "\n\n", key_b_, "\n"));
    router_ = RouterHandle::Start({"--model=" + std::string(kModel), "--local-workers=1",
                                   "--api-key-file=" + keys, "--log-level=warn"});
    ASSERT_NE(router_, nullptr);
    // Health needs no key (the readiness probe has none).
    ASSERT_TRUE(WaitFor([&] { return router_->Serving(); }, seconds(60)))
        << router_->process().output();
    channel_ = grpc::CreateChannel(router_->grpc_address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Epserve::NewStub(channel_);
  }

  grpc::Status Info(const std::string& key) {
    grpc::ClientContext ctx;
    Bounded(&ctx);
    if (!key.empty()) rpc::AddBearerToken(&ctx, key);
    v1::GetServerInfoResponse resp;
    return stub_->GetServerInfo(&ctx, {}, &resp);
  }

  grpc::Status Abort(const std::string& id, const std::string& key) {
    grpc::ClientContext ctx;
    Bounded(&ctx);
    if (!key.empty()) rpc::AddBearerToken(&ctx, key);
    v1::AbortRequest req;
    req.set_request_id(id);
    v1::AbortResponse resp;
    return stub_->Abort(&ctx, req, &resp);
  }

  std::string key_a_, key_b_;
  std::unique_ptr<RouterHandle> router_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Epserve::Stub> stub_;
};

TEST_F(ApiKeys, EveryCallNeedsAKeyFromTheFile) {
  grpc::Status s = Info("");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("requires the API key"));
  s = Info(std::string(32, 'c'));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("wrong API key"));
  EXPECT_TRUE(Info(key_a_).ok());
  EXPECT_TRUE(Info(key_b_).ok());

  // A Generate without a key is refused before it is queued, and counted.
  {
    grpc::ClientContext ctx;
    Bounded(&ctx);
    v1::GenerateRequest req;
    req.mutable_token_ids()->add_ids(1);
    auto reader = stub_->Generate(&ctx, req);
    v1::GenerateResponse resp;
    EXPECT_FALSE(reader->Read(&resp));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(MetricValue(ScrapeMetrics(router_->metrics_address()),
                        "epserve_requests_rejected_total{model=\"tiny-random-qwen3-moe\","
                        "reason=\"unauthenticated\"}"),
            1.0);

  // The CLI presents a key from --api-key-file.
  const std::string key_file = WriteFile(ScratchDir() + "/cli_key", key_b_ + "\n");
  RunResult with = RunToExit(
      Binary("epserve"),
      {"info", "--server=" + router_->grpc_address(), "--api-key-file=" + key_file}, seconds(20));
  EXPECT_EQ(with.exit_code, 0) << with.output;
  RunResult without =
      RunToExit(Binary("epserve"), {"info", "--server=" + router_->grpc_address()}, seconds(20));
  EXPECT_NE(without.exit_code, 0) << without.output;
  EXPECT_THAT(without.output, HasSubstr("API key"));
}

TEST_F(ApiKeys, OnlyTheCallerThatSentARequestCanAbortIt) {
  v1::GenerateRequest req;
  req.set_request_id("mine");
  req.mutable_token_ids()->add_ids(1);
  req.mutable_token_ids()->add_ids(2);
  req.mutable_sampling_params()->set_max_tokens(2000);
  req.mutable_sampling_params()->set_ignore_eos(true);
  req.mutable_sampling_params()->set_temperature(0);
  grpc::ClientContext ctx;
  rpc::AddBearerToken(&ctx, key_a_);
  auto reader = stub_->Generate(&ctx, req);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));  // running

  // Another key's Abort hears what an unknown id hears; the request runs on.
  grpc::Status other = Abort("mine", key_b_);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(other.error_message(), "request_id: no running request 'mine'");
  EXPECT_EQ(Abort("nobody-has-this-id", key_b_).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Abort("mine", "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The owner's Abort ends it.
  EXPECT_TRUE(Abort("mine", key_a_).ok());
  v1::GenerateResponse resp;
  std::optional<v1::GenerateComplete> complete;
  size_t tokens = static_cast<size_t>(first.has_chunk() ? first.chunk().token_ids_size() : 0);
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) tokens += static_cast<size_t>(resp.chunk().token_ids_size());
    if (resp.has_complete()) complete = resp.complete();
  }
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(complete.has_value());
  EXPECT_EQ(complete->finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_LT(tokens, 2000u);
}

constexpr char kTls[] = EPSERVE_SOURCE_DIR "/tests/fixtures/tls/";
constexpr char kPythonClient[] = EPSERVE_SOURCE_DIR "/tools/examples/python_client.py";

std::string Tls(const std::string& name) { return std::string(kTls) + name; }

// The client port with mutual TLS: the CLI and the Python client get through
// with a certificate of the cluster CA; plaintext, no certificate or one of
// another CA do not.
TEST(ClientTls, MutualTlsRoundTripWithTheCliAndThePythonClient) {
  auto router = RouterHandle::Start(
      {"--model=" + std::string(kModel), "--local-workers=1", "--tls-cert=" + Tls("server.pem"),
       "--tls-key=" + Tls("server.key"), "--tls-client-ca=" + Tls("ca.pem")});
  ASSERT_NE(router, nullptr);
  const std::string server = "--server=" + router->grpc_address();
  RunResult health =
      RunToExit(Binary("epserve"),
                {"health", server, "--wait-serving-s=60", "--tls-ca=" + Tls("ca.pem"),
                 "--tls-cert=" + Tls("client.pem"), "--tls-key=" + Tls("client.key")},
                seconds(90));
  ASSERT_EQ(health.exit_code, 0) << health.output << router->process().output();
  EXPECT_THAT(router->process().output(), HasSubstr("(mutual TLS)"));

  RunResult python =
      RunToExit("/usr/bin/python3",
                {std::string(kPythonClient), server, "--prompt=Hello", "--max-tokens=4",
                 "--tls-ca=" + Tls("ca.pem"), "--tls-cert=" + Tls("client.pem"),
                 "--tls-key=" + Tls("client.key")},
                seconds(60));
  EXPECT_EQ(python.exit_code, 0) << python.output;
  EXPECT_THAT(python.output, HasSubstr("\"output_ids\""));

  const std::vector<std::vector<std::string>> refused = {
      {"info", server, "--timeout-s=5"},                               // plaintext
      {"info", server, "--timeout-s=5", "--tls-ca=" + Tls("ca.pem")},  // no certificate
      {"info", server, "--timeout-s=5", "--tls-ca=" + Tls("ca.pem"),
       "--tls-cert=" + Tls("other_client.pem"), "--tls-key=" + Tls("other_client.key")},
  };
  for (const auto& args : refused) {
    RunResult r = RunToExit(Binary("epserve"), args, seconds(20));
    EXPECT_NE(r.exit_code, 0) << r.output;
  }
  RunResult bad_flags = RunToExit(Binary("epserve"),
                                  {"info", server, "--tls-cert=" + Tls("client.pem")}, seconds(20));
  EXPECT_EQ(bad_flags.exit_code, 2) << bad_flags.output;
  EXPECT_THAT(bad_flags.output, HasSubstr("--tls-cert and --tls-key go together"));
}

// The control plane with mutual TLS and no secret: a worker with a
// certificate of the cluster CA joins; one of another CA, or plaintext, does
// not.
TEST(ControlPlane, MutualTlsAuthenticatesWorkersByCertificate) {
  auto router = RouterHandle::Start(
      {"--model=" + ConfigOnlyModel(), "--workers=1", "--load-format=dummy",
       "--control-tls-cert=" + Tls("server.pem"), "--control-tls-key=" + Tls("server.key"),
       "--control-tls-client-ca=" + Tls("ca.pem")});
  ASSERT_NE(router, nullptr);
  EXPECT_TRUE(router->secret_file().empty());
  auto worker = [&](std::vector<std::string> tls, const std::string& tag) {
    std::vector<std::string> args = router->WorkerJoinArgs();
    args.insert(args.end(), {"--connect-timeout-s=3", "--metrics-listen=",
                             "--collective-host=127.0.0.1", "--cpu-threads=1"});
    args.insert(args.end(), tls.begin(), tls.end());
    return Start(Binary("epserve-worker"), args, ScratchDir() + "/worker_" + tag + ".log");
  };
  for (const auto& [tag, tls] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"plaintext", {}},
           {"other_ca",
            {"--tls-ca=" + Tls("ca.pem"), "--tls-cert=" + Tls("other_client.pem"),
             "--tls-key=" + Tls("other_client.key")}}}) {
    Process rogue = worker(tls, tag);
    EXPECT_EQ(rogue.proc.Wait(seconds(20)), 1) << tag << ": " << rogue.output();
    EXPECT_THAT(rogue.output(), HasSubstr("could not register")) << tag;
  }
  EXPECT_EQ(router->Info().workers_size(), 0);
  Process good = worker({"--tls-ca=" + Tls("ca.pem"), "--tls-cert=" + Tls("client.pem"),
                         "--tls-key=" + Tls("client.key")},
                        "good");
  EXPECT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << good.output() << router->process().output();
  router->process().proc.Signal(SIGTERM);
  EXPECT_EQ(router->process().proc.Wait(seconds(20)), 0);
  EXPECT_EQ(good.proc.Wait(seconds(20)), 0) << good.output();
}

// Sends `bytes` as the request of `method` (unary or server streaming) and
// returns the call's status.
grpc::Status RawCall(const std::string& address, const std::string& method,
                     const std::string& bytes) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  Bounded(&ctx);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  auto call = stub.PrepareCall(&ctx, method, &cq);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  call->Write(request, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(4)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Invalid UTF-8 in any text field is INVALID_ARGUMENT naming the field (not
// gRPC's bare UNIMPLEMENTED), for every method that takes client text.
TEST(ClientInput, InvalidUtf8IsInvalidArgumentNamingTheField) {
  auto router = RouterHandle::Start({"--model=" + ConfigOnlyModel(), "--workers=1"});
  ASSERT_NE(router, nullptr);
  auto patched = [](const google::protobuf::Message& m, const std::string& placeholder,
                    const std::string& bytes) {
    std::string wire = m.SerializeAsString();
    wire.replace(wire.find(placeholder), placeholder.size(), bytes);
    return wire;
  };
  v1::GenerateRequest generate;
  generate.set_text("hello");
  generate.mutable_sampling_params()->add_stop("XY");
  v1::TokenizeRequest tokenize;
  tokenize.set_text("abc");
  v1::AbortRequest abort;
  abort.set_request_id("abcd");
  struct Case {
    std::string method;
    std::string bytes;
    std::string message;
  };
  const Case cases[] = {
      {"/epserve.v1.Epserve/Generate", patched(generate, "hello", "hel\xC0\x80"),
       "text: not valid UTF-8"},
      {"/epserve.v1.Epserve/Generate", patched(generate, "XY", "\xED\xA0"),
       "sampling_params.stop[0]: not valid UTF-8"},
      {"/epserve.v1.Epserve/Tokenize", patched(tokenize, "abc", "a\xFF\xFE"),
       "text: not valid UTF-8"},
      {"/epserve.v1.Epserve/Abort", patched(abort, "abcd", "ab\xF4\x90"),
       "request_id: not valid UTF-8"},
      {"/epserve.v1.Epserve/Generate", std::string("\xFF\xFF\xFF", 3),
       "not a valid epserve.v1.GenerateRequest message"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + " " + c.message);
    grpc::Status s = RawCall(router->grpc_address(), c.method, c.bytes);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message));
  }
  // The router is unharmed.
  EXPECT_EQ(router->Info().state(), v1::CLUSTER_STATE_FORMING);
}

}  // namespace
}  // namespace epserve::testing
