#include "common/rpc/auth.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/client_interceptor.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"

namespace epserve::rpc {
namespace {

constexpr absl::string_view kBearer = "Bearer ";

absl::Status CheckToken(absl::string_view token, absl::string_view where) {
  if (token.size() < kMinTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": a token of ", token.size(),
                                                   " bytes is too short to be secret (at least ",
                                                   kMinTokenBytes, ")"));
  }
  for (char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": tokens must be printable ASCII without spaces (they travel in a header)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path,
                                                       absl::string_view flag) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(flag, ": cannot read '", path, "'"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", path, "' is not a regular file"));
  }
  if (st.st_size > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' is ", st.st_size, " bytes; a token file is small"));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    LOG_WARN("{}: '{}' can be read by other users (mode {:o}); chmod 600 it", flag, path,
             st.st_mode & 0777);
  }
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read '", path, "'"));
  std::stringstream buf;
  buf << in.rdbuf();
  std::vector<std::string> tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(buf.str(), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    if (absl::Status s = CheckToken(line, absl::StrCat(flag, " ", path, ":", line_no)); !s.ok()) {
      return s;
    }
    tokens.emplace_back(line);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", path, "' holds no token"));
  }
  return tokens;
}

absl::StatusOr<std::string> ReadSingleToken(const std::string& path, absl::string_view flag,
                                            absl::string_view noun, absl::string_view why_one) {
  absl::StatusOr<std::vector<std::string>> tokens = ReadTokenFile(path, flag);
  if (!tokens.ok()) return tokens.status();
  if (tokens->size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' holds ", tokens->size(), " ", noun, "; ", why_one));
  }
  return std::move(tokens->front());
}

absl::StatusOr<std::optional<std::string>> LoadClusterSecret(const std::string& file,
                                                             absl::string_view flag) {
  if (!file.empty()) {
    absl::StatusOr<std::string> secret =
        ReadSingleToken(file, flag, "tokens", "the cluster secret is one line");
    if (!secret.ok()) return secret.status();
    return std::optional<std::string>(std::move(*secret));
  }
  const char* env = std::getenv(kClusterSecretEnv);
  if (env == nullptr || *env == '\0') return std::optional<std::string>();
  std::string value(absl::StripAsciiWhitespace(env));
  if (absl::Status s = CheckToken(value, absl::StrCat("$", kClusterSecretEnv)); !s.ok()) return s;
  return std::optional<std::string>(std::move(value));
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // The length is not secret; the contents are.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

std::optional<std::string> BearerToken(const grpc::ServerContextBase& ctx) {
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWithIgnoreCase(value, kBearer)) return std::nullopt;
  value.remove_prefix(kBearer.size());
  return std::string(absl::StripAsciiWhitespace(value));
}

void AddBearerToken(grpc::ClientContext* ctx, const std::string& token) {
  ctx->AddMetadata("authorization", absl::StrCat(kBearer, token));
}

namespace {

class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class BearerInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token)
      : header_(absl::StrCat(kBearer, token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerInterceptor(&header_);
  }

 private:
  const std::string header_;  // outlives the channel's calls: the channel owns the factory
};

}  // namespace

std::shared_ptr<grpc::Channel> CreateChannelWithToken(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const std::string& token) {
  if (token.empty()) return grpc::CreateChannel(target, credentials);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, credentials, grpc::ChannelArguments(), std::move(factories));
}

TokenSet::TokenSet(std::vector<std::string> tokens) {
  if (tokens.empty()) return;
  shared_ = std::make_shared<Shared>();
  shared_->tokens = std::make_shared<const std::vector<std::string>>(std::move(tokens));
}

void TokenSet::Replace(std::vector<std::string> tokens) {
  if (shared_ == nullptr) return;
  auto fresh = std::make_shared<const std::vector<std::string>>(std::move(tokens));
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->tokens = std::move(fresh);
}

std::shared_ptr<const std::vector<std::string>> TokenSet::Tokens() const {
  static const auto* const kNone = new std::shared_ptr<const std::vector<std::string>>(
      std::make_shared<const std::vector<std::string>>());
  if (shared_ == nullptr) return *kNone;
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->tokens;
}

std::optional<size_t> TokenSet::Match(absl::string_view presented) const {
  const std::shared_ptr<const std::vector<std::string>> tokens = Tokens();
  std::optional<size_t> found;
  for (size_t i = 0; i < tokens->size(); ++i) {
    if (ConstantTimeEquals((*tokens)[i], presented) && !found) found = i;
  }
  return found;
}

absl::StatusOr<size_t> TokenSet::Check(const grpc::ServerContextBase& ctx, absl::string_view what,
                                       absl::string_view how_to_fix) const {
  if (empty()) return size_t{0};
  std::optional<std::string> presented = BearerToken(ctx);
  if (!presented) {
    return absl::UnauthenticatedError(absl::StrCat("this server requires the ", what,
                                                   " as 'authorization: Bearer <token>' metadata; ",
                                                   how_to_fix));
  }
  std::optional<size_t> index = Match(*presented);
  if (!index) return absl::UnauthenticatedError(absl::StrCat("wrong ", what, "; ", how_to_fix));
  return *index;
}

}  // namespace epserve::rpc
