// Fixture loading shared by the chat-template tests.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace epserve::jinja::testing {

// Path of a file under tests/chat_template/fixtures.
std::string FixturePath(const std::string& relative);
// File contents, byte for byte; fails the test (and returns "") when missing.
std::string ReadFixture(const std::string& relative);
// Parses a fixture JSON file keeping object key order.
nlohmann::ordered_json ReadJsonFixture(const std::string& relative);
// A gtest-safe test name: letters, digits and '_' only.
std::string TestName(const std::string& raw);

}  // namespace epserve::jinja::testing
