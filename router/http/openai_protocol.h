// The OpenAI-compatible HTTP API's wire format (POST /v1/completions,
// GET /v1/models, errors), as pure functions over JSON text: a request body
// becomes epserve.v1.GenerateRequests for the same RequestBuilder the gRPC
// API uses, and the engine's GenerateResponses become OpenAI JSON objects
// and server-sent-event chunks. No sockets here (http_frontend.h serves it).
//
// Parameters (vLLM's names): model, prompt (a string, a list of strings, a
// list of token ids, or a list of lists of token ids), max_tokens (16),
// temperature, top_p, top_k (-1 or 0: off), min_p, seed, stop (a string or a
// list), stop_token_ids, presence_penalty, frequency_penalty,
// repetition_penalty, logprobs (0-20: that many alternatives per token), n
// (1-128: independent requests, seed + j for the j-th when seeded), min_tokens,
// ignore_eos, include_stop_str_in_output, skip_special_tokens, stream,
// stream_options.include_usage, user (accepted, unused). Refused with 400
// naming the field: echo true, suffix, best_of other than n, a non-empty
// logit_bias. Fields not listed are ignored, as OpenAI's API does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

#include "epserve/v1/epserve.pb.h"

namespace epserve::http {

// An OpenAI error: the HTTP status and {"error": {message, type, param, code}}.
struct HttpError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault; empty when none
  std::string message;
  std::string code;  // OpenAI's code string; empty: null
};

std::string ErrorBody(const HttpError& error);

// The HTTP error of an epserve status: INVALID_ARGUMENT / FAILED_PRECONDITION
// / OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND
// 404, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, UNIMPLEMENTED 501, others
// 500. The message is the status's; `param` when the caller knows the field.
HttpError FromStatus(const absl::Status& status, std::string param = "");

struct CompletionRequest {
  std::string model;
  // One per prompt, with the sampling parameters (request_id empty).
  std::vector<v1::GenerateRequest> prompts;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int logprobs = -1;           // -1: none; else the alternatives per token
};

// The model's own sampling defaults (generation_config.json: temperature,
// top_p, top_k, min_p, repetition_penalty), applied where a request leaves
// the parameter out, as vLLM's OpenAI server does.
struct SamplingDefaults {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int32_t> top_k;
};

// Reads them from `model_dir`/generation_config.json (none: no file or no
// such keys). INVALID_ARGUMENT naming the file and key for a wrong type.
absl::StatusOr<SamplingDefaults> ReadSamplingDefaults(const std::string& model_dir);

// Parses a /v1/completions body. `served_model`: the one model id this
// server answers to (another `model` is a 404 naming both).
std::optional<HttpError> ParseCompletionRequest(absl::string_view body,
                                                const std::string& served_model,
                                                CompletionRequest* out,
                                                const SamplingDefaults& defaults = {});

// POST /v1/chat/completions. The conversation and tools keep the request's
// key order (the template's tojson prints them in that order, as Python's
// dicts do). Messages as the chat template sees them: content as a string
// (a list of text parts joined with "\n"), tool_calls' JSON-string arguments
// parsed into objects (as vLLM does; left a string when not JSON), every
// other field (name, tool_call_id, reasoning_content, ...) as sent.
struct ChatRequest {
  std::string model;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: none (or tool_choice "none")
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  // chat_template_kwargs (e.g. enable_thinking), added to the template's
  // variables.
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();
  v1::SamplingParams sampling;  // the seed included
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  int top_logprobs = -1;  // -1: logprobs off; else the alternatives per token
};

// Parses a /v1/chat/completions body: messages (roles system, developer,
// user, assistant, tool; text content only), tools (type function) with
// tool_choice auto or none, add_generation_prompt, continue_final_message,
// chat_template_kwargs, max_tokens or max_completion_tokens (default: up to
// the context), logprobs + top_logprobs, and the parameters completions
// take. Errors name the field ("messages[2].role").
std::optional<HttpError> ParseChatRequest(absl::string_view body, const std::string& served_model,
                                          ChatRequest* out, const SamplingDefaults& defaults = {});

// One choice's result, accumulated from its GenerateResponses.
struct ChoiceResult {
  std::string text;
  std::vector<uint32_t> token_ids;
  std::vector<v1::TokenLogprob> logprobs;
  std::string finish_reason;  // "stop" / "length" / "abort"
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t cached_tokens = 0;  // prompt tokens served from the prefix cache
};

// Folds one response of a choice into `result`.
void Accumulate(const v1::GenerateResponse& response, ChoiceResult* result);

// OpenAI's finish_reason for an epserve one.
std::string FinishReasonName(v1::FinishReason reason);

// Decodes one token id to its text for logprobs ("tokens"); the caller's
// tokenizer, or "<id>" where there is none.
using TokenText = std::string (*)(const void* ctx, uint32_t id);

struct CompletionFormat {
  // "text_completion" for both (completions), or "chat.completion" and
  // "chat.completion.chunk" (chat): the answer's and the stream events'.
  std::string object = "text_completion";
  std::string chunk_object = "text_completion";
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;
  std::string model;
  std::string system_fingerprint;
  int logprobs = -1;
  const void* token_text_ctx = nullptr;
  TokenText token_text = nullptr;
  // The chunk events' constant start (PrepareChunkPrefix); empty: rendered
  // per event.
  std::string chunk_prefix;
};

// Renders the part of every chunk event that does not change (id, created,
// model, ...) into format->chunk_prefix, once per request.
void PrepareChunkPrefix(CompletionFormat* format);

// The non-streaming body: choices in order, usage summed over them (prompt
// tokens counted once per prompt).
std::string CompletionBody(const CompletionFormat& format, const std::vector<ChoiceResult>& choices,
                           int n);

// A streaming chunk of choice `index`: its new text (and logprobs), and the
// finish reason when it ended ("" while running). One "data: ...\n\n" event.
std::string CompletionChunkEvent(const CompletionFormat& format, int index, const std::string& text,
                                 const std::vector<v1::TokenLogprob>& logprobs,
                                 const std::string& finish_reason);
// Chat: the non-streaming body (message role assistant, logprobs as
// {"content": [{token, logprob, bytes, top_logprobs}]}), and a stream event
// of choice `index`: the first carries the role, the last (finish_reason
// set) an empty delta.
std::string ChatCompletionBody(const CompletionFormat& format,
                               const std::vector<ChoiceResult>& choices, int n);
std::string ChatChunkEvent(const CompletionFormat& format, int index, bool first,
                           const std::string& text, const std::vector<v1::TokenLogprob>& logprobs,
                           const std::string& finish_reason);

// The usage event (choices empty) of stream_options.include_usage.
std::string UsageEvent(const CompletionFormat& format, uint32_t prompt_tokens,
                       uint32_t completion_tokens);
// An error inside a stream that already started (status 200 sent).
std::string ErrorEvent(const HttpError& error);
inline constexpr char kDoneEvent[] = "data: [DONE]\n\n";

// GET /v1/models.
std::string ModelsBody(const std::string& model, int64_t created, int64_t max_model_len);

}  // namespace epserve::http
