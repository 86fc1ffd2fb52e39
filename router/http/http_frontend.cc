#include "router/http/http_frontend.h"

#include <civetweb.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/version.h"
#include "router/cluster/worker_registry.h"
#include "router/engine/engine.h"
#include "router/engine/serving_metrics.h"
#include "router/frontend/request_builder.h"
#include "router/http/openai_protocol.h"

namespace epserve::http {
namespace {

using router::Engine;
using router::NewRequest;

// Responses of every choice of one HTTP request, in arrival order.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int, v1::GenerateResponse>> events;
  std::vector<std::optional<absl::Status>> finished;  // per choice
};

class ChoiceStream final : public router::GenerateStream {
 public:
  ChoiceStream(std::shared_ptr<Mailbox> box, int index) : box_(std::move(box)), index_(index) {}
  void Write(v1::GenerateResponse response) override {
    std::lock_guard<std::mutex> lock(box_->mu);
    box_->events.emplace_back(index_, std::move(response));
    box_->cv.notify_all();
  }
  void Finish(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(box_->mu);
    if (!box_->finished[static_cast<size_t>(index_)]) {
      box_->finished[static_cast<size_t>(index_)] = status;
    }
    box_->cv.notify_all();
  }

 private:
  std::shared_ptr<Mailbox> box_;
  const int index_;
};

// The head of a streaming answer (the body ends when the connection closes).
constexpr char kEventStreamHeaders[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    "Connection: close\r\n\r\n";

bool WriteAll(mg_connection* conn, const std::string& data) {
  return data.empty() || mg_write(conn, data.data(), data.size()) == static_cast<int>(data.size());
}

int Respond(mg_connection* conn, int status, const std::string& body,
            const char* content_type = "application/json") {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            status, mg_get_response_code_text(conn, status), content_type, body.size());
  WriteAll(conn, body);
  return status;
}

int RespondError(mg_connection* conn, const HttpError& error) {
  return Respond(conn, error.status, ErrorBody(error));
}

std::string TokenTextOf(const void* ctx, uint32_t id) {
  const auto* tok = static_cast<const tokenizer::Tokenizer*>(ctx);
  const int32_t ids[1] = {static_cast<int32_t>(id)};
  absl::StatusOr<std::string> text = tok->Decode(ids, {});
  return text.ok() ? *text : absl::StrCat("<", id, ">");
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct HttpFrontend::Impl {
  explicit Impl(const HttpFrontendOptions& o) : builder(o.limits, o.tokenizer) {}
  frontend::RequestBuilder builder;
};

absl::StatusOr<std::unique_ptr<HttpFrontend>> HttpFrontend::Start(HttpFrontendOptions options,
                                                                  router::WorkerRegistry* registry,
                                                                  Engine* engine,
                                                                  router::ServingMetrics* metrics) {
  static const unsigned initialised = mg_init_library(0);
  (void)initialised;
  std::unique_ptr<HttpFrontend> self(new HttpFrontend());
  self->options_ = std::move(options);
  self->registry_ = registry;
  self->engine_ = engine;
  self->metrics_ = metrics;
  self->impl_ = std::make_unique<Impl>(self->options_);
  self->created_ = UnixSeconds();
  const std::string ports = self->options_.listen.ToString();
  const std::string threads = absl::StrCat(self->options_.num_threads);
  const char* mg_options[] = {
      "listening_ports", ports.c_str(),       "num_threads", threads.c_str(), "request_timeout_ms",
      "60000",           "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof callbacks);
  self->ctx_ = mg_start(&callbacks, nullptr, mg_options);
  if (self->ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("--http-listen: cannot serve HTTP on ", ports,
                                               " (port in use or address not local?)"));
  }
  mg_set_request_handler(self->ctx_, "/", &HttpFrontend::Handle, self.get());
  mg_server_port bound[4];
  const int n = mg_get_server_ports(self->ctx_, 4, bound);
  self->address_ = self->options_.listen;
  if (n > 0) self->address_.port = static_cast<uint16_t>(bound[0].port);
  return self;
}

HttpFrontend::~HttpFrontend() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

int HttpFrontend::Handle(mg_connection* conn, void* self) {
  return static_cast<HttpFrontend*>(self)->Serve(conn);
}

int HttpFrontend::Serve(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string method = info->request_method != nullptr ? info->request_method : "";
  const std::string path = info->local_uri != nullptr ? info->local_uri : "";
  if (path == "/health") {
    if (registry_->serving() && !engine_->draining()) return Respond(conn, 200, "{}");
    v1::GetServerInfoResponse server;
    registry_->FillServerInfo(&server, router::Clock::now());
    HttpError e = FromStatus(absl::UnavailableError(
        engine_->draining() ? "the router is draining"
                            : absl::StrCat("cluster is not serving: ", server.state_reason())));
    return RespondError(conn, e);
  }
  if (path == "/version")
    return Respond(conn, 200, absl::StrCat("{\"version\":\"", kVersion, "\"}"));

  // Everything else needs a key when keys are configured.
  std::string owner;
  if (!options_.api_keys.empty()) {
    const char* auth = mg_get_header(conn, "Authorization");
    std::string presented = auth != nullptr ? auth : "";
    std::optional<size_t> key;
    if (absl::StartsWithIgnoreCase(presented, "Bearer ")) {
      key = options_.api_keys.Match(absl::string_view(presented).substr(7));
    }
    if (!key) {
      if (metrics_ != nullptr) metrics_->RequestRejected("unauthenticated");
      return RespondError(conn, FromStatus(absl::UnauthenticatedError(
                                    auth == nullptr ? "missing API key: send \"Authorization: "
                                                      "Bearer KEY\" (the router's operator hands "
                                                      "them out, --api-key-file)"
                                                    : "invalid API key")));
    }
    owner = absl::StrCat("key:", *key);
  } else {
    owner = absl::StrCat("ipv4:", info->remote_addr);
  }
  if (path == "/v1/models") {
    if (method != "GET")
      return RespondError(conn, HttpError{405, "invalid_request_error", "", "use GET", ""});
    return Respond(conn, 200, ModelsBody(options_.model_name, created_, options_.max_model_len));
  }
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (method != "POST") {
      return RespondError(conn, HttpError{405, "invalid_request_error", "", "use POST", ""});
    }
    return Completions(conn, owner, /*chat=*/path == "/v1/chat/completions");
  }
  return RespondError(conn, HttpError{404, "not_found_error", "",
                                      absl::StrCat("no route ", method, " ", path), ""});
}

int HttpFrontend::Completions(mg_connection* conn, const std::string& owner, bool chat) {
  const mg_request_info* info = mg_get_request_info(conn);
  auto reject = [&](const char* reason, const HttpError& e) {
    if (metrics_ != nullptr) metrics_->RequestRejected(reason);
    return RespondError(conn, e);
  };
  if (info->content_length < 0) {
    return reject("invalid",
                  HttpError{411, "invalid_request_error", "", "Content-Length required", ""});
  }
  if (static_cast<uint64_t>(info->content_length) > options_.max_body_bytes) {
    return reject("invalid", HttpError{413, "invalid_request_error", "",
                                       absl::StrCat("request body of ", info->content_length,
                                                    " bytes exceeds ", options_.max_body_bytes),
                                       ""});
  }
  std::string body(static_cast<size_t>(info->content_length), '\0');
  size_t got = 0;
  while (got < body.size()) {
    const int r = mg_read(conn, body.data() + got, body.size() - got);
    if (r <= 0) return 400;  // the client went away mid-body
    got += static_cast<size_t>(r);
  }
  CompletionRequest req;
  if (!chat) {
    if (std::optional<HttpError> e =
            ParseCompletionRequest(body, options_.model_name, &req, options_.sampling_defaults)) {
      return reject(e->status == 404 ? "unknown_model" : "invalid", *e);
    }
  } else {
    ChatRequest chat_req;
    if (std::optional<HttpError> e =
            ParseChatRequest(body, options_.model_name, &chat_req, options_.sampling_defaults)) {
      return reject(e->status == 404 ? "unknown_model" : "invalid", *e);
    }
    if (options_.chat_template == nullptr) {
      return reject("invalid",
                    HttpError{400, "invalid_request_error", "messages",
                              absl::StrCat("the model '", options_.model_name,
                                           "' has no chat template (tokenizer_config.json); start "
                                           "the router with --chat-template FILE, or use "
                                           "/v1/completions"),
                              ""});
    }
    absl::StatusOr<std::string> prompt = options_.chat_template->Render(chat_req);
    if (!prompt.ok()) {
      // The template's own raise_exception() text, or what failed and where.
      HttpError e = FromStatus(absl::InvalidArgumentError(prompt.status().message()), "messages");
      return reject("invalid", e);
    }
    v1::GenerateRequest one;
    one.set_text(std::move(*prompt));
    one.set_add_special_tokens(false);  // the template wrote them
    *one.mutable_sampling_params() = std::move(chat_req.sampling);
    req.model = std::move(chat_req.model);
    req.prompts.push_back(std::move(one));
    req.n = chat_req.n;
    req.stream = chat_req.stream;
    req.include_usage = chat_req.include_usage;
    req.logprobs = chat_req.top_logprobs;
  }
  if (engine_->draining()) {
    return reject("draining", FromStatus(absl::UnavailableError(
                                  "the router is draining (shutting down); not accepting new "
                                  "requests")));
  }
  if (!registry_->serving() && !engine_->recovering()) {
    v1::GetServerInfoResponse server;
    registry_->FillServerInfo(&server, router::Clock::now());
    return reject("unavailable", FromStatus(absl::UnavailableError(absl::StrCat(
                                     "cluster is not serving: ", server.state_reason()))));
  }
  // Every choice built before any is submitted: a bad one refuses them all.
  const auto arrival = frontend::RequestClock::now();
  std::vector<frontend::GenerationRequest> built;
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    for (int j = 0; j < req.n; ++j) {
      v1::GenerateRequest one = req.prompts[p];
      if (one.sampling_params().has_seed()) {
        one.mutable_sampling_params()->set_seed(one.sampling_params().seed() +
                                                static_cast<uint64_t>(j));
      }
      absl::StatusOr<frontend::GenerationRequest> b =
          impl_->builder.Build(one, arrival, std::nullopt);
      if (!b.ok()) {
        return reject("invalid", FromStatus(b.status(), req.prompts.size() > 1
                                                            ? absl::StrCat("prompt[", p, "]")
                                                            : std::string("prompt")));
      }
      b->owner = owner;
      built.push_back(std::move(*b));
    }
  }
  const int choices = static_cast<int>(built.size());
  auto box = std::make_shared<Mailbox>();
  box->finished.resize(built.size());
  std::vector<std::string> ids;
  for (int i = 0; i < choices; ++i) {
    NewRequest nr;
    static_cast<frontend::GenerationRequest&>(nr) = std::move(built[static_cast<size_t>(i)]);
    nr.stream = std::make_shared<ChoiceStream>(box, i);
    ids.push_back(nr.id);
    std::shared_ptr<router::GenerateStream> stream = nr.stream;
    if (absl::Status s = engine_->Submit(std::move(nr)); !s.ok()) stream->Finish(s);
  }
  auto cancel_all = [&](const char* why) {
    for (const std::string& id : ids) engine_->Cancel(id, absl::CancelledError(why));
  };

  CompletionFormat format;
  if (chat) {
    format.object = "chat.completion";
    format.chunk_object = "chat.completion.chunk";
  }
  format.id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", ids.front());
  format.created = UnixSeconds();
  format.model = options_.model_name;
  format.system_fingerprint = absl::StrCat("epserve-", kVersion);
  format.logprobs = req.logprobs;
  if (options_.tokenizer != nullptr) {
    format.token_text_ctx = options_.tokenizer.get();
    format.token_text = &TokenTextOf;
  }
  PrepareChunkPrefix(&format);
  std::vector<ChoiceResult> results(static_cast<size_t>(choices));
  std::vector<bool> started(static_cast<size_t>(choices), false);  // chat: role sent
  bool headers_sent = false;
  std::optional<HttpError> failure;
  while (true) {
    std::deque<std::pair<int, v1::GenerateResponse>> batch;
    bool all_done = false;
    {
      std::unique_lock<std::mutex> lock(box->mu);
      box->cv.wait_for(lock, std::chrono::seconds(15), [&] {
        if (!box->events.empty()) return true;
        for (const auto& f : box->finished) {
          if (!f) return false;
        }
        return true;
      });
      if (!box->events.empty()) {
        batch.swap(box->events);  // everything queued: one write for all of it
      } else {
        all_done = true;
        for (const auto& f : box->finished) all_done = all_done && f.has_value();
      }
      if (batch.empty() && all_done) {
        for (const auto& f : box->finished) {
          if (!f->ok() && !failure) failure = FromStatus(*f);
        }
      }
    }
    if (!batch.empty()) {
      std::string data;
      for (const auto& [index, response] : batch) {
        ChoiceResult& r = results[static_cast<size_t>(index)];
        Accumulate(response, &r);
        if (!req.stream) continue;
        if (response.has_chunk()) {
          const v1::GenerateChunk& c = response.chunk();
          std::vector<v1::TokenLogprob> lps(c.logprobs().begin(), c.logprobs().end());
          if (chat) {
            data += ChatChunkEvent(format, index, !started[static_cast<size_t>(index)], c.text(),
                                   lps, "");
            started[static_cast<size_t>(index)] = true;
          } else {
            data += CompletionChunkEvent(format, index, c.text(), lps, "");
          }
        } else if (response.has_complete()) {
          if (chat) {
            data += ChatChunkEvent(format, index, !started[static_cast<size_t>(index)], "", {},
                                   r.finish_reason);
            started[static_cast<size_t>(index)] = true;
          } else {
            data += CompletionChunkEvent(format, index, "", {}, r.finish_reason);
          }
        }
      }
      if (req.stream) {
        if (!headers_sent) {
          data.insert(0, kEventStreamHeaders);
          headers_sent = true;
        }
        if (!WriteAll(conn, data)) {
          cancel_all("the HTTP client went away");
          return 200;
        }
      }
      continue;
    }
    if (all_done) break;
    // Idle for 15 s: a comment line keeps proxies open and finds a client
    // that went away.
    if (req.stream && headers_sent && !WriteAll(conn, ": keep-alive\n\n")) {
      cancel_all("the HTTP client went away");
      return 200;
    }
  }
  if (!req.stream) {
    if (failure) return RespondError(conn, *failure);
    return Respond(
        conn, 200,
        chat ? ChatCompletionBody(format, results, req.n) : CompletionBody(format, results, req.n));
  }
  if (!headers_sent) {
    if (failure) return RespondError(conn, *failure);
    WriteAll(conn, kEventStreamHeaders);
  }
  if (failure) {
    WriteAll(conn, ErrorEvent(*failure));
  } else if (req.include_usage) {
    uint32_t prompt = 0, completion = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      if (i % static_cast<size_t>(req.n) == 0) prompt += results[i].prompt_tokens;
      completion += results[i].completion_tokens;
    }
    WriteAll(conn, UsageEvent(format, prompt, completion));
  }
  WriteAll(conn, kDoneEvent);
  return 200;
}

}  // namespace epserve::http
