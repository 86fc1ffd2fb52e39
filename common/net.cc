#include "common/net.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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

absl::StatusOr<std::string> InterfaceIpv4Address(absl::string_view name) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    return absl::InternalError(
        absl::StrCat("listing network interfaces (getifaddrs): ", std::strerror(errno)));
  }
  // Every interface in the order the kernel lists them, with its IPv4 and
  // IPv6 addresses (an interface without addresses appears once, through its
  // AF_PACKET entry).
  std::vector<std::pair<std::string, std::vector<std::string>>> interfaces;
  std::string found;
  bool name_exists = false;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_name == nullptr) continue;
    std::string iface = it->ifa_name;
    auto entry = interfaces.begin();
    while (entry != interfaces.end() && entry->first != iface) ++entry;
    if (entry == interfaces.end()) {
      interfaces.emplace_back(iface, std::vector<std::string>());
      entry = interfaces.end() - 1;
    }
    if (iface == name) name_exists = true;
    if (it->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    const int family = it->ifa_addr->sa_family;
    if (family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(it->ifa_addr);
      if (inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text)) == nullptr) continue;
      if (iface == name && found.empty()) found = text;
    } else if (family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(it->ifa_addr);
      if (inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text)) == nullptr) continue;
    } else {
      continue;
    }
    entry->second.push_back(text);
  }
  freeifaddrs(list);
  if (!found.empty()) return found;

  std::vector<std::string> listed;
  for (const auto& [iface, addresses] : interfaces) {
    listed.push_back(absl::StrCat(
        iface, " (", addresses.empty() ? "none" : absl::StrJoin(addresses, ", "), ")"));
  }
  const std::string available = listed.empty() ? "none" : absl::StrJoin(listed, ", ");
  if (name_exists) {
    return absl::NotFoundError(absl::StrCat("network interface '", name,
                                            "' has no IPv4 address; interfaces: ", available));
  }
  return absl::NotFoundError(
      absl::StrCat("no network interface named '", name, "'; interfaces: ", available));
}

}  // namespace epserve
