#include "common/net.h"

#include <unistd.h>

#include <climits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace epserve {

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, bool allow_port_zero) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad address '", text, "': ", why, " (expected HOST:PORT)"));
  };
  HostPort out;
  absl::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) return bad("unclosed '[' in IPv6 address");
    out.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("missing ':PORT'");
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return bad("missing ':PORT'");
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return bad("IPv6 addresses need brackets, e.g. [::1]:50051");
    }
    port_text = text.substr(colon + 1);
  }
  if (out.host.empty()) return bad("empty host");
  for (char c : out.host) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return bad("whitespace in host");
  }
  int port = 0;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port)) return bad("port is not a number");
  if (port < 0 || port > 65535) return bad("port out of range 0..65535");
  if (port == 0 && !allow_port_zero) return bad("port 0 is not a valid destination");
  out.port = static_cast<uint16_t>(port);
  return out;
}

std::string LocalHostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace epserve
