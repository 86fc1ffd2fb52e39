// The OpenAI-compatible HTTP front end (--http-listen): civetweb serves
//   POST /v1/completions   streaming (server-sent events) or not
//   GET  /v1/models        the served model
//   GET  /health           200 while SERVING, else 503 with the reason
//   GET  /version
// over the same RequestBuilder and Engine as the gRPC API (wire format:
// openai_protocol.h). API keys (--api-key-file) are checked as
// "Authorization: Bearer KEY" on every path but /health and /version. A
// streaming client that goes away has its requests cancelled (KV freed,
// counted as cancelled) at the next write.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/net.h"
#include "common/rpc/auth.h"
#include "common/tokenizer/tokenizer.h"
#include "router/http/chat_template.h"
#include "router/http/openai_protocol.h"
#include "router/validation/generate_validation.h"

struct mg_context;
struct mg_connection;

namespace epserve::router {
class Engine;
class WorkerRegistry;
class ServingMetrics;
}  // namespace epserve::router

namespace epserve::http {

struct HttpFrontendOptions {
  HostPort listen;                // port 0: the OS picks one (address() tells)
  std::string model_name;         // the id clients send as "model"
  int64_t max_model_len = 0;      // GET /v1/models
  router::GenerateLimits limits;  // as the gRPC API's
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;  // may be null
  rpc::TokenSet api_keys;                                 // empty: no key needed
  // generation_config.json's sampling defaults (ReadSamplingDefaults).
  SamplingDefaults sampling_defaults;
  // The chat template (ChatTemplate::Load); null: chat completions refused.
  std::shared_ptr<const ChatTemplate> chat_template;
  int num_threads = 128;  // concurrent HTTP requests (streams hold one each)
  uint64_t max_body_bytes = 8u << 20;
};

class HttpFrontend {
 public:
  // UNAVAILABLE naming the address when it cannot listen. `registry`,
  // `engine` and `metrics` (may be null) must outlive the front end.
  static absl::StatusOr<std::unique_ptr<HttpFrontend>> Start(HttpFrontendOptions options,
                                                             router::WorkerRegistry* registry,
                                                             router::Engine* engine,
                                                             router::ServingMetrics* metrics);
  ~HttpFrontend();  // stops listening; waits for handlers in flight

  const HostPort& address() const { return address_; }

 private:
  HttpFrontend() = default;
  static int Handle(mg_connection* conn, void* self);
  int Serve(mg_connection* conn);
  // POST /v1/completions, or /v1/chat/completions when `chat`.
  int Completions(mg_connection* conn, const std::string& owner, bool chat);

  HttpFrontendOptions options_;
  router::WorkerRegistry* registry_ = nullptr;
  router::Engine* engine_ = nullptr;
  router::ServingMetrics* metrics_ = nullptr;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  mg_context* ctx_ = nullptr;
  HostPort address_;
  int64_t created_ = 0;
};

}  // namespace epserve::http
