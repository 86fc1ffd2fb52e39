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

}  // namespace epserve
