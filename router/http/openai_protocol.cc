#include "router/http/openai_protocol.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
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
template <typename J>
std::optional<HttpError> Number(const J& body, const char* key, double lo, double hi,
                                const std::function<void(double)>& set) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return Invalid(key, "expected a number");
  const double v = it->template get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", it->dump()));
  }
  set(v);
  return std::nullopt;
}

template <typename J>
std::optional<HttpError> Integer(const J& body, const char* key, int64_t lo, int64_t hi,
                                 const std::function<void(int64_t)>& set) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() && !it->is_number_unsigned()) {
    return Invalid(key, "expected an integer");
  }
  const int64_t v =
      it->is_number_unsigned() && it->template get<uint64_t>() > static_cast<uint64_t>(hi)
          ? hi + 1
          : it->template get<int64_t>();
  if (v < lo || v > hi) {
    return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", it->dump()));
  }
  set(v);
  return std::nullopt;
}

template <typename J>
std::optional<HttpError> Bool(const J& body, const char* key,
                              const std::function<void(bool)>& set) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return Invalid(key, "expected true or false");
  set(it->template get<bool>());
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

namespace {

// The body as a JSON object, or the error.
template <typename J>
std::optional<HttpError> ParseBody(absl::string_view text, J* body) {
  *body = J::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  HttpError e;
  if (body->is_discarded()) {
    e.message = "the request body is not valid JSON (or not UTF-8)";
    return e;
  }
  if (!body->is_object()) {
    e.message = "the request body must be a JSON object";
    return e;
  }
  return std::nullopt;
}

template <typename J>
std::optional<HttpError> ParseModel(const J& body, const std::string& served_model,
                                    std::string* model) {
  auto it = body.find("model");
  if (it == body.end() || !it->is_string()) {
    return Invalid("model", "required, a string (GET /v1/models lists the one served)");
  }
  *model = it->template get<std::string>();
  if (*model != served_model) {
    HttpError e;
    e.status = 404;
    e.type = "not_found_error";
    e.param = "model";
    e.code = "model_not_found";
    e.message = absl::StrCat("The model '", *model, "' does not exist; this server serves '",
                             served_model, "'");
    return e;
  }
  return std::nullopt;
}

// What completions and chat completions share: the sampling parameters
// (the model's defaults first, the request's values replacing them; seed
// and max tokens are the caller's), n, stream and stream_options.
struct CommonParams {
  v1::SamplingParams sampling;
  std::optional<uint64_t> seed;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
};

template <typename J>
std::optional<HttpError> ParseCommon(const J& body, const SamplingDefaults& defaults,
                                     CommonParams* out) {
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() &&
      !(body["logit_bias"].is_object() && body["logit_bias"].empty())) {
    return Invalid("logit_bias", "is not supported by this server");
  }
  v1::SamplingParams& s = out->sampling;
  if (defaults.temperature) s.set_temperature(*defaults.temperature);
  if (defaults.top_p) s.set_top_p(*defaults.top_p);
  if (defaults.top_k) s.set_top_k(*defaults.top_k < 0 ? 0 : *defaults.top_k);
  if (defaults.min_p) s.set_min_p(*defaults.min_p);
  if (defaults.repetition_penalty) s.set_repetition_penalty(*defaults.repetition_penalty);
  std::optional<HttpError> err;
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
  if ((err = Integer(body, "seed", std::numeric_limits<int64_t>::min(),
                     std::numeric_limits<int64_t>::max(),
                     [&](int64_t v) { out->seed = static_cast<uint64_t>(v); }))) {
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
    const J& so = body["stream_options"];
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
      !(body["best_of"].is_number_integer() && body["best_of"].template get<int64_t>() == out->n)) {
    return Invalid("best_of", "only best_of equal to n is supported");
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const J& stop = body["stop"];
    if (stop.is_string()) {
      s.add_stop(stop.template get<std::string>());
    } else if (stop.is_array()) {
      for (const J& x : stop) {
        if (!x.is_string()) return Invalid("stop", "expected a string or a list of strings");
        s.add_stop(x.template get<std::string>());
      }
    } else {
      return Invalid("stop", "expected a string or a list of strings");
    }
  }
  if (body.contains("stop_token_ids") && !body["stop_token_ids"].is_null()) {
    const J& ids = body["stop_token_ids"];
    if (!ids.is_array()) return Invalid("stop_token_ids", "expected a list of token ids");
    for (const J& x : ids) {
      if (!x.is_number_unsigned() || x.template get<uint64_t>() > UINT32_MAX) {
        return Invalid("stop_token_ids", "expected a list of token ids");
      }
      s.add_stop_token_ids(x.template get<uint32_t>());
    }
  }
  if (body.contains("user") && !body["user"].is_null() && !body["user"].is_string()) {
    return Invalid("user", "expected a string");
  }
  return std::nullopt;
}

}  // namespace

std::optional<HttpError> ParseCompletionRequest(absl::string_view text,
                                                const std::string& served_model,
                                                CompletionRequest* out,
                                                const SamplingDefaults& defaults) {
  json body;
  if (std::optional<HttpError> e = ParseBody(text, &body)) return e;
  *out = CompletionRequest();
  std::optional<HttpError> err;
  if ((err = ParseModel(body, served_model, &out->model))) return err;
  if (body.contains("suffix") && !body["suffix"].is_null()) {
    return Invalid("suffix", "is not supported by this server");
  }
  CommonParams common;
  common.sampling.set_max_tokens(16);  // OpenAI's default for completions
  if ((err = ParseCommon(body, defaults, &common))) return err;
  v1::SamplingParams& s = common.sampling;
  out->n = common.n;
  out->stream = common.stream;
  out->include_usage = common.include_usage;
  if ((err = Integer(body, "max_tokens", 0, std::numeric_limits<uint32_t>::max(),
                     [&](int64_t v) { s.set_max_tokens(static_cast<uint32_t>(v)); }))) {
    return err;
  }
  if ((err = Integer(body, "logprobs", 0, kMaxLogprobs,
                     [&](int64_t v) { out->logprobs = static_cast<int>(v); }))) {
    return err;
  }
  if (out->logprobs >= 0) {
    s.set_logprobs(true);
    s.set_top_logprobs(static_cast<uint32_t>(out->logprobs));
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
  if (common.seed) {
    for (v1::GenerateRequest& r : out->prompts) r.mutable_sampling_params()->set_seed(*common.seed);
  }
  return std::nullopt;
}

namespace {

using ojson = nlohmann::ordered_json;

constexpr const char* kRoles[] = {"system", "developer", "user", "assistant", "tool"};

// A message's content as the template sees it: a string, or null for an
// assistant turn that only calls tools.
std::optional<HttpError> ChatContent(const ojson& message, const std::string& where,
                                     const std::string& role, ojson* content) {
  auto it = message.find("content");
  const bool may_be_empty = role == "assistant" && message.contains("tool_calls");
  if (it == message.end() || it->is_null()) {
    if (may_be_empty) {
      *content = nullptr;
      return std::nullopt;
    }
    return Invalid(where + ".content", absl::StrCat("required for role ", role));
  }
  if (it->is_string()) {
    *content = *it;
    return std::nullopt;
  }
  if (!it->is_array()) {
    return Invalid(where + ".content", "expected a string or a list of content parts");
  }
  std::string text;
  for (size_t j = 0; j < it->size(); ++j) {
    const ojson& part = (*it)[j];
    const std::string at = absl::StrCat(where, ".content[", j, "]");
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Invalid(at, "expected an object with a type");
    }
    const std::string type = part["type"].get<std::string>();
    if (type != "text") {
      return Invalid(at + ".type", absl::StrCat("'", type,
                                                "' parts are not supported (this server takes "
                                                "text only)"));
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return Invalid(at + ".text", "required, a string");
    }
    if (j > 0) text += "\n";
    text += part["text"].get<std::string>();
  }
  *content = text;
  return std::nullopt;
}

std::optional<HttpError> ChatToolCalls(ojson* message, const std::string& where) {
  ojson& calls = (*message)["tool_calls"];
  if (calls.is_null()) {
    message->erase("tool_calls");
    return std::nullopt;
  }
  if (!calls.is_array()) return Invalid(where + ".tool_calls", "expected a list");
  for (size_t j = 0; j < calls.size(); ++j) {
    ojson& call = calls[j];
    const std::string at = absl::StrCat(where, ".tool_calls[", j, "]");
    if (!call.is_object() || !call.contains("function") || !call["function"].is_object()) {
      return Invalid(at, "expected {\"type\": \"function\", \"function\": {name, arguments}}");
    }
    ojson& fn = call["function"];
    if (!fn.contains("name") || !fn["name"].is_string()) {
      return Invalid(at + ".function.name", "required, a string");
    }
    if (fn.contains("arguments") && fn["arguments"].is_string()) {
      const std::string& args = fn["arguments"].get_ref<const std::string&>();
      ojson parsed = ojson::parse(args, nullptr, /*allow_exceptions=*/false);
      if (!parsed.is_discarded() && parsed.is_object()) fn["arguments"] = std::move(parsed);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<HttpError> ParseChatRequest(absl::string_view text, const std::string& served_model,
                                          ChatRequest* out, const SamplingDefaults& defaults) {
  ojson body;
  if (std::optional<HttpError> e = ParseBody(text, &body)) return e;
  *out = ChatRequest();
  std::optional<HttpError> err;
  if ((err = ParseModel(body, served_model, &out->model))) return err;
  CommonParams common;
  if ((err = ParseCommon(body, defaults, &common))) return err;
  out->sampling = std::move(common.sampling);
  v1::SamplingParams& s = out->sampling;
  if (common.seed) s.set_seed(*common.seed);
  out->n = common.n;
  out->stream = common.stream;
  out->include_usage = common.include_usage;
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {  // the second wins
    if ((err = Integer(body, key, 0, std::numeric_limits<uint32_t>::max(),
                       [&](int64_t v) { s.set_max_tokens(static_cast<uint32_t>(v)); }))) {
      return err;
    }
  }
  bool logprobs = false;
  if ((err = Bool(body, "logprobs", [&](bool v) { logprobs = v; }))) return err;
  int top = 0;
  bool top_given = false;
  if ((err = Integer(body, "top_logprobs", 0, kMaxLogprobs, [&](int64_t v) {
         top = static_cast<int>(v);
         top_given = true;
       }))) {
    return err;
  }
  if (top_given && top > 0 && !logprobs) {
    return Invalid("top_logprobs", "needs logprobs: true");
  }
  if (logprobs) {
    out->top_logprobs = top;
    s.set_logprobs(true);
    s.set_top_logprobs(static_cast<uint32_t>(top));
  }
  if ((err =
           Bool(body, "add_generation_prompt", [&](bool v) { out->add_generation_prompt = v; }))) {
    return err;
  }
  if ((err = Bool(body, "continue_final_message",
                  [&](bool v) { out->continue_final_message = v; }))) {
    return err;
  }
  if (out->continue_final_message && out->add_generation_prompt) {
    return Invalid("continue_final_message",
                   "cannot be true together with add_generation_prompt (set it to false)");
  }
  if (body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()) {
    if (!body["chat_template_kwargs"].is_object()) {
      return Invalid("chat_template_kwargs", "expected an object");
    }
    out->template_kwargs = body["chat_template_kwargs"];
  }
  if (body.contains("chat_template") && !body["chat_template"].is_null()) {
    return Invalid("chat_template", "is not accepted per request (the server's template is used)");
  }

  // Tools, and whether they reach the template.
  std::string tool_choice = "auto";
  if (body.contains("tool_choice") && !body["tool_choice"].is_null()) {
    const ojson& tc = body["tool_choice"];
    if (!tc.is_string() || (tc != "auto" && tc != "none")) {
      return Invalid("tool_choice",
                     "only \"auto\" and \"none\" are supported (this server does not force or "
                     "parse tool calls: they come back as the message text)");
    }
    tool_choice = tc.get<std::string>();
  }
  if (body.contains("tools") && !body["tools"].is_null()) {
    const ojson& tools = body["tools"];
    if (!tools.is_array()) return Invalid("tools", "expected a list");
    for (size_t i = 0; i < tools.size(); ++i) {
      const ojson& t = tools[i];
      const std::string at = absl::StrCat("tools[", i, "]");
      if (!t.is_object() || !t.contains("type") || t["type"] != "function" ||
          !t.contains("function") || !t["function"].is_object()) {
        return Invalid(at, "expected {\"type\": \"function\", \"function\": {...}}");
      }
      if (!t["function"].contains("name") || !t["function"]["name"].is_string()) {
        return Invalid(at + ".function.name", "required, a string");
      }
    }
    if (!tools.empty() && tool_choice != "none") out->tools = tools;
  }

  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array() || messages->empty()) {
    return Invalid("messages", "required, a non-empty list of messages");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    ojson message = (*messages)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!message.is_object()) return Invalid(where, "expected an object");
    auto role_it = message.find("role");
    if (role_it == message.end() || !role_it->is_string()) {
      return Invalid(where + ".role", "required, a string");
    }
    const std::string role = role_it->get<std::string>();
    bool known = false;
    for (const char* r : kRoles) known = known || role == r;
    if (!known) {
      return Invalid(where + ".role",
                     absl::StrCat("unknown role '", role,
                                  "' (expected system, developer, user, assistant or tool)"));
    }
    ojson content;
    if ((err = ChatContent(message, where, role, &content))) return err;
    message["content"] = std::move(content);
    if (message.contains("tool_calls")) {
      if (role != "assistant") return Invalid(where + ".tool_calls", "only for role assistant");
      if ((err = ChatToolCalls(&message, where))) return err;
    }
    if (role == "tool" &&
        (!message.contains("tool_call_id") || !message["tool_call_id"].is_string())) {
      return Invalid(where + ".tool_call_id", "required for role tool, a string");
    }
    out->messages.push_back(std::move(message));
  }
  if (out->continue_final_message && out->messages.back()["role"] != "assistant") {
    return Invalid("continue_final_message", "the last message must be the assistant's");
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

// usage of a non-streaming body: prompt (and cached) tokens once per prompt
// (every n-th choice), completion tokens of every choice.
json UsageJson(const std::vector<ChoiceResult>& choices, int n) {
  uint64_t prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    if (n <= 0 || i % static_cast<size_t>(n) == 0) {
      prompt += c.prompt_tokens;
      cached += c.cached_tokens;
    }
    completion += c.completion_tokens;
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json Envelope(const CompletionFormat& f, bool chunk = false) {
  return json{{"id", f.id},
              {"object", chunk ? f.chunk_object : f.object},
              {"created", f.created},
              {"model", f.model},
              {"system_fingerprint", f.system_fingerprint}};
}

}  // namespace

std::string CompletionBody(const CompletionFormat& f, const std::vector<ChoiceResult>& choices,
                           int n) {
  json body = Envelope(f);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    list.push_back({{"index", i},
                    {"text", c.text},
                    {"logprobs", LogprobsJson(f, c.logprobs)},
                    {"finish_reason", c.finish_reason}});
  }
  body["choices"] = std::move(list);
  body["usage"] = UsageJson(choices, n);
  return Dump(body);
}

void PrepareChunkPrefix(CompletionFormat* f) {
  std::string envelope = Dump(Envelope(*f, /*chunk=*/true));
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
  json body = Envelope(f, /*chunk=*/true);
  json choice = {{"index", index},
                 {"text", text},
                 {"logprobs", logprobs.empty() ? json(nullptr) : LogprobsJson(f, logprobs)}};
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  body["choices"] = json::array({choice});
  return absl::StrCat("data: ", Dump(body), "\n\n");
}

namespace {

json TokenBytes(const std::string& token) {
  json bytes = json::array();
  for (unsigned char c : token) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// Chat logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}.
json ChatLogprobsJson(const CompletionFormat& f, const std::vector<v1::TokenLogprob>& logprobs) {
  if (f.logprobs < 0) return nullptr;
  auto text = [&](uint32_t id) {
    return f.token_text != nullptr ? f.token_text(f.token_text_ctx, id)
                                   : absl::StrCat("<", id, ">");
  };
  json content = json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    const std::string token = text(lp.token_id());
    json top = json::array();
    for (const v1::TopLogprob& t : lp.top_logprobs()) {
      const std::string alt = text(t.token_id());
      top.push_back({{"token", alt}, {"logprob", t.logprob()}, {"bytes", TokenBytes(alt)}});
    }
    content.push_back({{"token", token},
                       {"logprob", lp.logprob()},
                       {"bytes", TokenBytes(token)},
                       {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}};
}

}  // namespace

std::string ChatCompletionBody(const CompletionFormat& f, const std::vector<ChoiceResult>& choices,
                               int n) {
  json body = Envelope(f);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    list.push_back({{"index", i},
                    {"message", {{"role", "assistant"}, {"content", c.text}}},
                    {"logprobs", ChatLogprobsJson(f, c.logprobs)},
                    {"finish_reason", c.finish_reason}});
  }
  body["choices"] = std::move(list);
  body["usage"] = UsageJson(choices, n);
  return Dump(body);
}

std::string ChatChunkEvent(const CompletionFormat& f, int index, bool first,
                           const std::string& text, const std::vector<v1::TokenLogprob>& logprobs,
                           const std::string& finish_reason) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (first || !text.empty() || finish_reason.empty()) delta["content"] = text;
  json choice = {{"index", index},
                 {"delta", std::move(delta)},
                 {"logprobs", logprobs.empty() ? json(nullptr) : ChatLogprobsJson(f, logprobs)}};
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  json body = Envelope(f, /*chunk=*/true);
  body["choices"] = json::array({std::move(choice)});
  return absl::StrCat("data: ", Dump(body), "\n\n");
}

std::string UsageEvent(const CompletionFormat& f, uint32_t prompt_tokens,
                       uint32_t completion_tokens) {
  json body = Envelope(f, /*chunk=*/true);
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
