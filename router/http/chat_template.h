// The served model's chat template: where it comes from, and rendering a
// /v1/chat/completions conversation into the prompt text, as transformers'
// apply_chat_template does (the variables it passes, continue_final_message).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/chat_template/jinja.h"
#include "nlohmann/json.hpp"
#include "router/http/openai_protocol.h"

namespace epserve::http {

class ChatTemplate {
 public:
  // The template of `--chat-template FILE` when given, else the model's:
  // chat_template.jinja, else tokenizer_config.json's "chat_template" (a
  // string, or a list of named templates: "default", and "tool_use" for
  // requests with tools where the model has one). nullopt when the model has
  // none (chat requests are then refused naming --chat-template). A template
  // that uses a Jinja feature the engine lacks is an error naming the feature
  // and the file: the server does not start rather than render it wrongly.
  static absl::StatusOr<std::optional<ChatTemplate>> Load(const std::string& model_dir,
                                                          const std::string& override_path);
  // From template text (tests); `special_tokens` as tokenizer_config.json's
  // bos_token / eos_token / ... (strings, or objects with "content").
  static absl::StatusOr<ChatTemplate> FromSource(const std::string& source,
                                                 const nlohmann::ordered_json& special_tokens,
                                                 const std::string& origin);

  // The prompt text. The variables: messages, tools (null when none),
  // documents (null), add_generation_prompt, the special tokens
  // (bos_token, eos_token, ... as set), then chat_template_kwargs. With
  // continue_final_message the text ends right after the last message's
  // content. Errors: InvalidArgument; raise_exception()'s message as is
  // (jinja::IsTemplateException) for conversations the template rejects.
  absl::StatusOr<std::string> Render(const ChatRequest& request) const;

  const std::string& origin() const { return origin_; }  // file it came from

 private:
  ChatTemplate() = default;
  std::shared_ptr<const jinja::Template> default_;
  std::shared_ptr<const jinja::Template> tool_use_;  // may be null
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
  std::string origin_;
};

}  // namespace epserve::http
