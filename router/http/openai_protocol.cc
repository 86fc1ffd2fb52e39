#include "router/http/openai_protocol.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace epserve::http {
namespace {

using json = nlohmann::json;

constexpr int kMaxN = 128;

// JSON text; bytes that are not UTF-8 (a token's piece of a multi-byte
// character) become U+FFFD instead of failing.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
constexpr int kMaxLogprobs = 20;

HttpError Invalid(const std::string& param, const std::string& message) {
  HttpError e;
  e.param = param;
  e.message = absl::StrCat(param, ": ", message);
  return e;
}

// Reads an optional number field into `set` (called only when present and a
// number); a wrong type is an error naming the field.
std::optional<HttpError> Number(const json& body, const char* key, double lo, double hi,
                                const std::function<void(double)>& set) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return Invalid(key, "expected a number");
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", it->dump()));
  }
  set(v);
  return std::nullopt;
}

std::optional<HttpError> Integer(const json& body, const char* key, int64_t lo, int64_t hi,
                                 const std::function<void(int64_t)>& set) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() && !it->is_number_unsigned()) {
    return Invalid(key, "expected an integer");
  }
  const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)
                        ? hi + 1
                        : it->get<int64_t>();
  if (v < lo || v > hi) {
    return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", it->dump()));
  }
  set(v);
  return std::nullopt;
}

std::optional<HttpError> Bool(const json& body, const char* key,
                              const std::function<void(bool)>& set) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return Invalid(key, "expected true or false");
  set(it->get<bool>());
  return std::nullopt;
}

bool IsTokenList(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const json& x : v) {
    if (!x.is_number_integer() && !x.is_number_unsigned()) return false;
  }
  return true;
}

std::optional<HttpError> TokenIds(const json& v, const std::string& param,
                                  v1::GenerateRequest* req) {
  for (const json& x : v) {
    const int64_t id =
        x.is_number_unsigned() && x.get<uint64_t>() > UINT32_MAX ? -1 : x.get<int64_t>();
    if (id < 0 || id > std::numeric_limits<uint32_t>::max()) {
      return Invalid(param, absl::StrCat("token id ", x.dump(), " out of range"));
    }
    req->mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
  }
  return std::nullopt;
}

}  // namespace

std::string ErrorBody(const HttpError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return Dump(json{{"error", err}});
}

HttpError FromStatus(const absl::Status& status, std::string param) {
  HttpError e;
  e.message.assign(status.message().data(), status.message().size());
  e.param = std::move(param);
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kUnauthenticated:
      e.status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.status = 403;
      e.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404;
      e.type = "not_found_error";
      break;
    case absl::StatusCode::kAlreadyExists:
      e.status = 409;
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "service_unavailable";
      break;
    case absl::StatusCode::kUnimplemented:
      e.status = 501;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.status = 504;
      e.type = "timeout";
      break;
    default:
      e.status = 500;
      e.type = "internal_error";
      break;
  }
  return e;
}

absl::StatusOr<SamplingDefaults> ReadSamplingDefaults(const std::string& model_dir) {
  SamplingDefaults d;
  const std::filesystem::path path = std::filesystem::path(model_dir) / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return d;
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  json j = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a JSON object"));
  }
  auto number = [&](const char* key, std::optional<float>* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": key '", key, "' must be a number, found ", it->dump()));
    }
    *out = it->get<float>();
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(number("temperature", &d.temperature));
  RETURN_IF_ERROR(number("top_p", &d.top_p));
  RETURN_IF_ERROR(number("min_p", &d.min_p));
  RETURN_IF_ERROR(number("repetition_penalty", &d.repetition_penalty));
  std::optional<float> top_k;
  RETURN_IF_ERROR(number("top_k", &top_k));
  if (top_k) d.top_k = static_cast<int32_t>(*top_k);
  return d;
}

std::optional<HttpError> ParseCompletionRequest(absl::string_view text,
                                                const std::string& served_model,
                                                CompletionRequest* out,
                                                const SamplingDefaults& defaults) {
  json body = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    HttpError e;
    e.message = "the request body is not valid JSON";
    return e;
  }
  if (!body.is_object()) {
    HttpError e;
    e.message = "the request body must be a JSON object";
    return e;
  }
  *out = CompletionRequest();
  auto model = body.find("model");
  if (model == body.end() || !model->is_string()) {
    return Invalid("model", "required, a string (GET /v1/models lists the one served)");
  }
  out->model = model->get<std::string>();
  if (out->model != served_model) {
    HttpError e;
    e.status = 404;
    e.type = "not_found_error";
    e.param = "model";
    e.code = "model_not_found";
    e.message = absl::StrCat("The model '", out->model, "' does not exist; this server serves '",
                             served_model, "'");
    return e;
  }
  for (const char* refused : {"suffix"}) {
    if (body.contains(refused) && !body[refused].is_null()) {
      return Invalid(refused, "is not supported by this server");
    }
  }
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() &&
      !(body["logit_bias"].is_object() && body["logit_bias"].empty())) {
    return Invalid("logit_bias", "is not supported by this server");
  }

  v1::SamplingParams s;
  s.set_max_tokens(16);  // OpenAI's default for completions
  // The model's defaults first; the request's own values replace them.
  if (defaults.temperature) s.set_temperature(*defaults.temperature);
  if (defaults.top_p) s.set_top_p(*defaults.top_p);
  if (defaults.top_k) s.set_top_k(*defaults.top_k < 0 ? 0 : *defaults.top_k);
  if (defaults.min_p) s.set_min_p(*defaults.min_p);
  if (defaults.repetition_penalty) s.set_repetition_penalty(*defaults.repetition_penalty);
  std::optional<HttpError> err;
  if ((err = Integer(body, "max_tokens", 0, std::numeric_limits<uint32_t>::max(),
                     [&](int64_t v) { s.set_max_tokens(static_cast<uint32_t>(v)); }))) {
    return err;
  }
  if ((err = Number(body, "temperature", 0, 1e6,
                    [&](double v) { s.set_temperature(static_cast<float>(v)); }))) {
    return err;
  }
  if ((err = Number(body, "top_p", 0, 1, [&](double v) { s.set_top_p(static_cast<float>(v)); }))) {
    return err;
  }
  if ((err = Integer(body, "top_k", -1, std::numeric_limits<int32_t>::max(),
                     [&](int64_t v) { s.set_top_k(v < 0 ? 0 : static_cast<int32_t>(v)); }))) {
    return err;
  }
  if ((err = Number(body, "min_p", 0, 1, [&](double v) { s.set_min_p(static_cast<float>(v)); }))) {
    return err;
  }
  std::optional<uint64_t> seed;
  if ((err = Integer(body, "seed", std::numeric_limits<int64_t>::min(),
                     std::numeric_limits<int64_t>::max(),
                     [&](int64_t v) { seed = static_cast<uint64_t>(v); }))) {
    return err;
  }
  if ((err = Number(body, "presence_penalty", -2, 2,
                    [&](double v) { s.set_presence_penalty(static_cast<float>(v)); }))) {
    return err;
  }
  if ((err = Number(body, "frequency_penalty", -2, 2,
                    [&](double v) { s.set_frequency_penalty(static_cast<float>(v)); }))) {
    return err;
  }
  if ((err = Number(body, "repetition_penalty", 0, 1e6,
                    [&](double v) { s.set_repetition_penalty(static_cast<float>(v)); }))) {
    return err;
  }
  if ((err = Integer(body, "min_tokens", 0, std::numeric_limits<uint32_t>::max(),
                     [&](int64_t v) { s.set_min_tokens(static_cast<uint32_t>(v)); }))) {
    return err;
  }
  if ((err = Bool(body, "ignore_eos", [&](bool v) { s.set_ignore_eos(v); }))) return err;
  if ((err = Bool(body, "include_stop_str_in_output",
                  [&](bool v) { s.set_include_stop_str_in_output(v); }))) {
    return err;
  }
  if ((err = Bool(body, "skip_special_tokens", [&](bool v) { s.set_skip_special_tokens(v); }))) {
    return err;
  }
  bool echo = false;
  if ((err = Bool(body, "echo", [&](bool v) { echo = v; }))) return err;
  if (echo) return Invalid("echo", "true is not supported by this server");
  if ((err = Bool(body, "stream", [&](bool v) { out->stream = v; }))) return err;
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) return Invalid("stream_options", "expected an object");
    if ((err = Bool(so, "include_usage", [&](bool v) { out->include_usage = v; }))) {
      err->param = "stream_options.include_usage";
      err->message = "stream_options." + err->message;
      return err;
    }
  }
  if ((err = Integer(body, "n", 1, kMaxN, [&](int64_t v) { out->n = static_cast<int>(v); }))) {
    return err;
  }
  if (body.contains("best_of") && !body["best_of"].is_null() &&
      !(body["best_of"].is_number_integer() && body["best_of"].get<int64_t>() == out->n)) {
    return Invalid("best_of", "only best_of equal to n is supported");
  }
  if ((err = Integer(body, "logprobs", 0, kMaxLogprobs,
                     [&](int64_t v) { out->logprobs = static_cast<int>(v); }))) {
    return err;
  }
  if (out->logprobs >= 0) {
    s.set_logprobs(true);
    s.set_top_logprobs(static_cast<uint32_t>(out->logprobs));
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& stop = body["stop"];
    if (stop.is_string()) {
      s.add_stop(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const json& x : stop) {
        if (!x.is_string()) return Invalid("stop", "expected a string or a list of strings");
        s.add_stop(x.get<std::string>());
      }
    } else {
      return Invalid("stop", "expected a string or a list of strings");
    }
  }
  if (body.contains("stop_token_ids") && !body["stop_token_ids"].is_null()) {
    const json& ids = body["stop_token_ids"];
    if (!ids.is_array()) return Invalid("stop_token_ids", "expected a list of token ids");
    for (const json& x : ids) {
      if (!x.is_number_unsigned() || x.get<uint64_t>() > UINT32_MAX) {
        return Invalid("stop_token_ids", "expected a list of token ids");
      }
      s.add_stop_token_ids(x.get<uint32_t>());
    }
  }
  if (body.contains("user") && !body["user"].is_null() && !body["user"].is_string()) {
    return Invalid("user", "expected a string");
  }

  auto prompt = body.find("prompt");
  if (prompt == body.end() || prompt->is_null()) return Invalid("prompt", "required");
  auto add = [&](v1::GenerateRequest req) {
    *req.mutable_sampling_params() = s;
    out->prompts.push_back(std::move(req));
  };
  if (prompt->is_string()) {
    v1::GenerateRequest req;
    req.set_text(prompt->get<std::string>());
    add(std::move(req));
  } else if (IsTokenList(*prompt)) {
    v1::GenerateRequest req;
    if ((err = TokenIds(*prompt, "prompt", &req))) return err;
    add(std::move(req));
  } else if (prompt->is_array() && !prompt->empty()) {
    for (size_t i = 0; i < prompt->size(); ++i) {
      const json& p = (*prompt)[i];
      const std::string param = absl::StrCat("prompt[", i, "]");
      v1::GenerateRequest req;
      if (p.is_string()) {
        req.set_text(p.get<std::string>());
      } else if (IsTokenList(p)) {
        if ((err = TokenIds(p, param, &req))) return err;
      } else {
        return Invalid(param, "expected a string or a non-empty list of token ids");
      }
      add(std::move(req));
    }
  } else {
    return Invalid("prompt",
                   "expected a string, a list of strings, or (lists of) token ids, non-empty");
  }
  if (out->prompts.size() * static_cast<size_t>(out->n) > static_cast<size_t>(kMaxN) * 8) {
    return Invalid("n", absl::StrCat(out->prompts.size(), " prompts x n ", out->n, " is more than ",
                                     kMaxN * 8, " requests"));
  }
  if (seed) {
    for (v1::GenerateRequest& r : out->prompts) r.mutable_sampling_params()->set_seed(*seed);
  }
  return std::nullopt;
}

void Accumulate(const v1::GenerateResponse& response, ChoiceResult* result) {
  if (response.has_chunk()) {
    const v1::GenerateChunk& c = response.chunk();
    result->text += c.text();
    result->token_ids.insert(result->token_ids.end(), c.token_ids().begin(), c.token_ids().end());
    result->logprobs.insert(result->logprobs.end(), c.logprobs().begin(), c.logprobs().end());
  }
  if (response.has_complete()) {
    const v1::GenerateComplete& done = response.complete();
    result->finish_reason = FinishReasonName(done.finish_reason());
    result->prompt_tokens = done.usage().prompt_tokens();
    result->completion_tokens = done.usage().completion_tokens();
    result->cached_tokens = done.usage().cached_tokens();
  }
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return "stop";
  }
}

namespace {

json LogprobsJson(const CompletionFormat& f, const std::vector<v1::TokenLogprob>& logprobs) {
  if (f.logprobs < 0) return nullptr;
  auto text = [&](uint32_t id) {
    return f.token_text != nullptr ? f.token_text(f.token_text_ctx, id)
                                   : absl::StrCat("<", id, ">");
  };
  json tokens = json::array(), values = json::array(), top = json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    tokens.push_back(text(lp.token_id()));
    values.push_back(lp.logprob());
    json alternatives = json::object();
    for (const v1::TopLogprob& t : lp.top_logprobs())
      alternatives[text(t.token_id())] = t.logprob();
    top.push_back(std::move(alternatives));
  }
  return json{{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", top}};
}

json Envelope(const CompletionFormat& f) {
  return json{{"id", f.id},
              {"object", "text_completion"},
              {"created", f.created},
              {"model", f.model},
              {"system_fingerprint", f.system_fingerprint}};
}

}  // namespace

std::string CompletionBody(const CompletionFormat& f, const std::vector<ChoiceResult>& choices,
                           int n) {
  json body = Envelope(f);
  json list = json::array();
  uint64_t prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    list.push_back({{"index", i},
                    {"text", c.text},
                    {"logprobs", LogprobsJson(f, c.logprobs)},
                    {"finish_reason", c.finish_reason}});
    if (n <= 0 || i % static_cast<size_t>(n) == 0) {
      prompt += c.prompt_tokens;
      cached += c.cached_tokens;
    }
    completion += c.completion_tokens;
  }
  body["choices"] = std::move(list);
  body["usage"] = {{"prompt_tokens", prompt},
                   {"completion_tokens", completion},
                   {"total_tokens", prompt + completion},
                   {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  return Dump(body);
}

void PrepareChunkPrefix(CompletionFormat* f) {
  std::string envelope = Dump(Envelope(*f));
  envelope.pop_back();  // the closing brace
  f->chunk_prefix = absl::StrCat("data: ", envelope, ",\"choices\":[{\"index\":");
}

std::string CompletionChunkEvent(const CompletionFormat& f, int index, const std::string& text,
                                 const std::vector<v1::TokenLogprob>& logprobs,
                                 const std::string& finish_reason) {
  if (!f.chunk_prefix.empty() && logprobs.empty()) {
    // The per-token path: the prefix rendered once, the text escaped here.
    return absl::StrCat(f.chunk_prefix, index, ",\"text\":", Dump(json(text)),
                        ",\"logprobs\":null,\"finish_reason\":",
                        finish_reason.empty() ? "null" : Dump(json(finish_reason)), "}]}\n\n");
  }
  json body = Envelope(f);
  json choice = {{"index", index},
                 {"text", text},
                 {"logprobs", logprobs.empty() ? json(nullptr) : LogprobsJson(f, logprobs)}};
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  body["choices"] = json::array({choice});
  return absl::StrCat("data: ", Dump(body), "\n\n");
}

std::string UsageEvent(const CompletionFormat& f, uint32_t prompt_tokens,
                       uint32_t completion_tokens) {
  json body = Envelope(f);
  body["choices"] = json::array();
  body["usage"] = {{"prompt_tokens", prompt_tokens},
                   {"completion_tokens", completion_tokens},
                   {"total_tokens", prompt_tokens + completion_tokens}};
  return absl::StrCat("data: ", Dump(body), "\n\n");
}

std::string ErrorEvent(const HttpError& error) {
  return absl::StrCat("data: ", ErrorBody(error), "\n\n");
}

std::string ModelsBody(const std::string& model, int64_t created, int64_t max_model_len) {
  json m = {{"id", model},           {"object", "model"}, {"created", created},
            {"owned_by", "epserve"}, {"root", model},     {"max_model_len", max_model_len}};
  return Dump(json{{"object", "list"}, {"data", json::array({m})}});
}

}  // namespace epserve::http
