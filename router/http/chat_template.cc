#include "router/http/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::http {
namespace {

using ojson = nlohmann::ordered_json;

// transformers' special_tokens_map keys: the template sees those that are set.
constexpr const char* kSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                          "pad_token", "cls_token", "mask_token"};

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot read"));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

absl::StatusOr<std::shared_ptr<const jinja::Template>> Compile(const std::string& source,
                                                               const std::string& origin) {
  absl::StatusOr<jinja::Template> t = jinja::Template::Parse(source);
  if (!t.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": the chat template cannot be served: ", t.status().message(),
                     " (give a template this server renders with --chat-template FILE)"));
  }
  return std::make_shared<const jinja::Template>(std::move(*t));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(const std::string& source,
                                                      const ojson& special_tokens,
                                                      const std::string& origin) {
  ChatTemplate c;
  c.origin_ = origin;
  ASSIGN_OR_RETURN(c.default_, Compile(source, origin));
  for (const char* key : kSpecialTokens) {
    auto it = special_tokens.find(key);
    if (it == special_tokens.end()) continue;
    if (it->is_string()) {
      c.special_tokens_[key] = *it;
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      c.special_tokens_[key] = (*it)["content"];  // an AddedToken
    }
  }
  return c;
}

absl::StatusOr<std::optional<ChatTemplate>> ChatTemplate::Load(const std::string& model_dir,
                                                               const std::string& override_path) {
  const std::filesystem::path dir(model_dir);
  ojson config = ojson::object();
  const std::filesystem::path config_path = dir / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
    config = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
    }
  }
  if (!override_path.empty()) {
    ASSIGN_OR_RETURN(std::string source, ReadFile(override_path));
    ASSIGN_OR_RETURN(ChatTemplate t, FromSource(source, config, override_path));
    return std::optional<ChatTemplate>(std::move(t));
  }
  const std::filesystem::path jinja_path = dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path, ec)) {
    ASSIGN_OR_RETURN(std::string source, ReadFile(jinja_path));
    ASSIGN_OR_RETURN(ChatTemplate t, FromSource(source, config, jinja_path.string()));
    return std::optional<ChatTemplate>(std::move(t));
  }
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::optional<ChatTemplate>();
  const std::string origin = config_path.string() + " (chat_template)";
  if (it->is_string()) {
    ASSIGN_OR_RETURN(ChatTemplate t, FromSource(it->get<std::string>(), config, origin));
    return std::optional<ChatTemplate>(std::move(t));
  }
  if (!it->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": expected a string or a list of {name, template}"));
  }
  std::optional<std::string> default_source, tool_source;
  for (const ojson& named : *it) {
    if (!named.is_object() || !named.contains("name") || !named["name"].is_string() ||
        !named.contains("template") || !named["template"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": expected a list of {\"name\", \"template\"} objects"));
    }
    if (named["name"] == "default") default_source = named["template"].get<std::string>();
    if (named["name"] == "tool_use") tool_source = named["template"].get<std::string>();
  }
  if (!default_source) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no template named \"default\""));
  }
  ASSIGN_OR_RETURN(ChatTemplate t, FromSource(*default_source, config, origin));
  if (tool_source) {
    ASSIGN_OR_RETURN(t.tool_use_, Compile(*tool_source, origin + " [tool_use]"));
  }
  return std::optional<ChatTemplate>(std::move(t));
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatRequest& request) const {
  ojson context = ojson::object();
  context["messages"] = request.messages;
  context["tools"] = request.tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = request.add_generation_prompt;
  for (const auto& [key, value] : special_tokens_.items()) context[key] = value;
  for (const auto& [key, value] : request.template_kwargs.items()) context[key] = value;
  const jinja::Template& t =
      !request.tools.is_null() && tool_use_ != nullptr ? *tool_use_ : *default_;
  ASSIGN_OR_RETURN(std::string prompt, t.Render(context));
  if (!request.continue_final_message) return prompt;
  // The text ends where the last (assistant) message's content ends, so the
  // model continues it instead of starting a new turn.
  const ojson& last = request.messages.back()["content"];
  const std::string content = last.is_string() ? last.get<std::string>() : std::string();
  for (const std::string& needle : {content, std::string(absl::StripAsciiWhitespace(content))}) {
    if (needle.empty()) continue;
    const size_t at = prompt.rfind(needle);
    if (at != std::string::npos) return prompt.substr(0, at + needle.size());
  }
  return absl::InvalidArgumentError(
      "continue_final_message: the chat template does not print the last message's content "
      "verbatim, so it cannot be continued");
}

}  // namespace epserve::http
