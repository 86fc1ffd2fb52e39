#include "tests/chat_template/test_util.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace epserve::jinja::testing {

std::string FixturePath(const std::string& relative) {
  return std::string(EPSERVE_CHAT_TEMPLATE_FIXTURES) + "/" + relative;
}

std::string ReadFixture(const std::string& relative) {
  std::ifstream in(FixturePath(relative), std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "missing fixture " << FixturePath(relative)
                  << " (see tools/chat_template_reference.py)";
    return "";
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

nlohmann::ordered_json ReadJsonFixture(const std::string& relative) {
  const std::string text = ReadFixture(relative);
  if (text.empty()) return nlohmann::ordered_json::object();
  return nlohmann::ordered_json::parse(text);
}

std::string TestName(const std::string& raw) {
  std::string name;
  for (char c : raw) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    name.push_back(ok ? c : '_');
  }
  return name;
}

}  // namespace epserve::jinja::testing
