// Address parsing for flags such as --listen and --router.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve {

struct HostPort {
  std::string host;  // name, IPv4 literal, or IPv6 literal without brackets
  uint16_t port = 0;

  // "host:port", with brackets around IPv6 literals ("[::1]:50051").
  std::string ToString() const;
};

// Parses "HOST:PORT" / "[V6]:PORT". Port 0 is accepted only when
// `allow_port_zero` (listen addresses: the OS picks a free port). The error
// message quotes the input and says what is wrong.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, bool allow_port_zero);

// This machine's host name (gethostname), or "localhost" if it has none.
std::string LocalHostName();

// The IPv4 address of network interface `name` (getifaddrs), as a dotted
// literal ("10.0.0.2"); the first one when it has several. NOT_FOUND when no
// interface has that name or it has no IPv4 address; the message then lists
// every interface with its addresses, e.g. "lo (127.0.0.1, ::1), eth0 (none)".
absl::StatusOr<std::string> InterfaceIpv4Address(absl::string_view name);

}  // namespace epserve
