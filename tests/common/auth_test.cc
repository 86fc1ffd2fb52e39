#include "common/rpc/auth.h"

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/secure_random.h"

#include "grpc/health/v1/health.grpc.pb.h"

namespace epserve::rpc {
namespace {

using ::testing::HasSubstr;

std::string Write(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/auth_test_" + name;
  std::ofstream(path, std::ios::trunc) << text;
  chmod(path.c_str(), 0600);
  return path;
}

TEST(ReadTokenFile, OneTokenPerLineWithCommentsAndBlankLines) {
  auto tokens = ReadTokenFile(
      Write("good", "# keys\n  0123456789abcdef  \n\n#x\nABCDEFGHIJKLMNOP+/=\n"), "--k");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_THAT(*tokens, ::testing::ElementsAre("0123456789abcdef", "ABCDEFGHIJKLMNOP+/="));
}

TEST(ReadTokenFile, BadFilesAreNamedWithTheFlagAndLine) {
  struct Case {
    std::string path;
    std::string message;
  };
  const std::string dir = ::testing::TempDir();
  const Case cases[] = {
      {"/nonexistent/keys", "--k: cannot read '/nonexistent/keys'"},
      {dir, "is not a regular file"},
      {Write("empty", "# nothing\n\n"), "holds no token"},
      {Write("short", "0123456789abcdef\nshort\n"), ":2: a token of 5 bytes is too short"},
      {Write("space", "0123456789 abcdef\n"), "printable ASCII without spaces"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    auto tokens = ReadTokenFile(c.path, "--k");
    ASSERT_FALSE(tokens.ok());
    EXPECT_THAT(std::string(tokens.status().message()), HasSubstr(c.message));
  }
}

TEST(LoadClusterSecret, FileThenEnvironmentThenNone) {
  unsetenv(kClusterSecretEnv);
  auto none = LoadClusterSecret("", "--s");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  setenv(kClusterSecretEnv, " from-the-environment \n", 1);
  auto env = LoadClusterSecret("", "--s");
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->value(), "from-the-environment");
  auto file = LoadClusterSecret(Write("secret", "from-the-file-0123\n"), "--s");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->value(), "from-the-file-0123");
  auto two = LoadClusterSecret(Write("two", "0123456789abcdef\nfedcba9876543210\n"), "--s");
  EXPECT_THAT(std::string(two.status().message()), HasSubstr("the cluster secret is one line"));
  setenv(kClusterSecretEnv, "short", 1);
  EXPECT_THAT(std::string(LoadClusterSecret("", "--s").status().message()),
              HasSubstr("$EPSERVE_CLUSTER_SECRET"));
  unsetenv(kClusterSecretEnv);
}

TEST(ConstantTimeEquals, ComparesContentsAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(TokenSet, ReplaceReachesEveryCopy) {
  TokenSet set({"first-token-0000"});
  TokenSet copy = set;  // e.g. the HTTP front end's, beside the gRPC one
  EXPECT_EQ(copy.Match("first-token-0000"), 0u);
  set.Replace({"rotated-token-00", "another-token-0"});
  EXPECT_EQ(copy.Match("first-token-0000"), std::nullopt);
  EXPECT_EQ(copy.Match("another-token-0"), 1u);
  EXPECT_FALSE(copy.empty());
  // A set made without tokens stays open (nothing to share or replace).
  TokenSet open;
  open.Replace({"ignored-token-00"});
  EXPECT_TRUE(open.empty());
}

TEST(TokenSet, MatchGivesTheIndex) {
  TokenSet set({"first-token-0000", "second-token-000"});
  EXPECT_EQ(set.Match("second-token-000"), 1u);
  EXPECT_EQ(set.Match("first-token-0000"), 0u);
  EXPECT_EQ(set.Match("first-token-000"), std::nullopt);
  EXPECT_EQ(TokenSet().Match("x"), std::nullopt);
}

TEST(RandomHex, IsHexOfTheLengthAndDiffers) {
  auto a = RandomHex(16), b = RandomHex(16);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(*a, ::testing::MatchesRegex("[0-9a-f]{32}"));
  EXPECT_NE(*a, *b);
}

// The server side reads what the client side sends: a health service whose
// Check answers only the right bearer token, reached through a plain channel
// and one made by CreateChannelWithToken.
class CheckedHealth final : public grpc::health::v1::Health::Service {
 public:
  explicit CheckedHealth(TokenSet keys) : keys_(std::move(keys)) {}
  grpc::Status Check(grpc::ServerContext* ctx, const grpc::health::v1::HealthCheckRequest*,
                     grpc::health::v1::HealthCheckResponse* resp) override {
    absl::StatusOr<size_t> who = keys_.Check(*ctx, "API key", "ask for one");
    if (!who.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, absl::StrCat(who.status().message()));
    }
    resp->set_status(*who == 1 ? grpc::health::v1::HealthCheckResponse::SERVING
                               : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    return grpc::Status::OK;
  }

 private:
  TokenSet keys_;
};

TEST(BearerMetadata, ServerChecksWhatTheChannelSends) {
  CheckedHealth service(TokenSet({"key-number-zero-0", "key-number-one-11"}));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto call = [&](const std::shared_ptr<grpc::Channel>& channel, const std::string& per_call) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (!per_call.empty()) AddBearerToken(&ctx, per_call);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = stub->Check(&ctx, {}, &resp);
    return std::make_pair(s, resp.status());
  };
  auto plain = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto [none, none_status] = call(plain, "");
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(none.error_message(), HasSubstr("requires the API key as 'authorization: Bearer"));
  auto [wrong, wrong_status] = call(plain, "key-number-two-22");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), HasSubstr("wrong API key; ask for one"));
  EXPECT_EQ(none_status, wrong_status);  // both unset
  auto [one, status] = call(plain, "key-number-one-11");
  EXPECT_TRUE(one.ok()) << one.error_message();
  EXPECT_EQ(status, grpc::health::v1::HealthCheckResponse::SERVING);
  auto with_key =
      CreateChannelWithToken(target, grpc::InsecureChannelCredentials(), "key-number-zero-0");
  auto [zero, status0] = call(with_key, "");
  EXPECT_TRUE(zero.ok()) << zero.error_message();
  EXPECT_EQ(status0, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  server->Shutdown();
}

}  // namespace
}  // namespace epserve::rpc
