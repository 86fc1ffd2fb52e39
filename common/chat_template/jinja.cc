#include "common/chat_template/jinja.h"

#include <utility>

#include "common/chat_template/ast.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/json.h"
#include "common/chat_template/parser.h"
#include "common/status.h"

namespace epserve::jinja {

Template::Template(std::shared_ptr<const ast::Program> program) : program_(std::move(program)) {}

absl::StatusOr<Template> Template::Parse(std::string_view source) {
  ASSIGN_OR_RETURN(std::unique_ptr<ast::Program> program, ParseTemplate(source));
  return Template(std::shared_ptr<const ast::Program>(std::move(program)));
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context,
                                             const RenderOptions& options) const {
  if (!context.is_object()) {
    return absl::InvalidArgumentError("chat template context must be a JSON object");
  }
  ASSIGN_OR_RETURN(Value variables, FromJson(context));
  Interpreter interpreter(options, std::move(variables));
  return interpreter.Render(*program_);
}

bool IsTemplateException(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kRaisedPayload).has_value();
}

}  // namespace epserve::jinja
