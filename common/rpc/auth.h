// Bearer tokens on gRPC metadata: the cluster secret that workers present on
// the control plane, and the API keys of the client port. The token travels
// as `authorization: Bearer <token>` (the convention of OpenAI-style APIs and
// of gRPC's own call credentials); comparisons take constant time.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class Channel;
class ChannelCredentials;
class ClientContext;
class ServerContextBase;
}  // namespace grpc

namespace epserve::rpc {

// The environment variable that can hold the cluster secret instead of a
// file (a Kubernetes Secret mounted as an environment variable).
inline constexpr char kClusterSecretEnv[] = "EPSERVE_CLUSTER_SECRET";
// Secrets and keys shorter than this are refused: they could be guessed.
inline constexpr size_t kMinTokenBytes = 16;

// The tokens of a secret file: one per non-empty line, surrounding
// whitespace dropped; lines starting with '#' are comments. `flag` names the
// option in errors. At least one token; each of kMinTokenBytes or more,
// printable ASCII without spaces (it travels in an HTTP header).
absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path,
                                                       absl::string_view flag);

// The one token of a file (ReadTokenFile's rules); a file of several is
// refused: "FLAG: 'PATH' holds N <noun>; <why_one>".
absl::StatusOr<std::string> ReadSingleToken(const std::string& path, absl::string_view flag,
                                            absl::string_view noun, absl::string_view why_one);

// The cluster secret: the single token of `file` when it is given, else the
// value of $EPSERVE_CLUSTER_SECRET, else nullopt (none configured).
absl::StatusOr<std::optional<std::string>> LoadClusterSecret(const std::string& file,
                                                             absl::string_view flag);

// Equality that takes the same time wherever the strings differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The token of the call's `authorization: Bearer <token>` metadata; nullopt
// when absent or not a bearer token.
std::optional<std::string> BearerToken(const grpc::ServerContextBase& ctx);

// Adds `authorization: Bearer <token>` to an outgoing call.
void AddBearerToken(grpc::ClientContext* ctx, const std::string& token);

// A channel to `target` whose every call carries `authorization: Bearer
// <token>` (an interceptor: works over plaintext too, where gRPC's call
// credentials are refused). An empty token: a plain channel.
std::shared_ptr<grpc::Channel> CreateChannelWithToken(
    const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials,
    const std::string& token);

// A set of accepted tokens (API keys, or the one cluster secret).
//
// Copies of a set made with tokens share them: Replace on one (key rotation,
// e.g. a re-read key file) is seen by every copy at its next check.
class TokenSet {
 public:
  TokenSet() = default;
  explicit TokenSet(std::vector<std::string> tokens);

  bool empty() const { return Tokens()->empty(); }
  // Swaps in `tokens` for this set and its copies (a set made empty stays
  // empty: there is nothing to share). Checks in flight finish with the old.
  void Replace(std::vector<std::string> tokens);
  // The index of the token `presented` equals; nullopt if none. Every
  // token is compared (no early exit that would time the match).
  std::optional<size_t> Match(absl::string_view presented) const;
  // OK with the index of the matching token, or UNAUTHENTICATED saying
  // what was missing or wrong (`what`: "API key", "cluster secret"), never
  // echoing the presented token. An empty set accepts every call (index 0).
  absl::StatusOr<size_t> Check(const grpc::ServerContextBase& ctx, absl::string_view what,
                               absl::string_view how_to_fix) const;

 private:
  struct Shared {
    mutable std::mutex mu;
    std::shared_ptr<const std::vector<std::string>> tokens;
  };
  std::shared_ptr<const std::vector<std::string>> Tokens() const;
  std::shared_ptr<Shared> shared_;  // null: no tokens
};

}  // namespace epserve::rpc
