// A throw-away network of "hosts" built from Linux network namespaces, for
// tests of the cross-host path on one machine (here with two peers):
//
//   current namespace                   netns epserve-netns-<pid>-0
//   +----------------------------+      +-----------------------+
//   | bridge epbr<pid>           |-veth-| veth0 10.213.N.2, lo  |
//   | 10.213.N.1/24              |      +-----------------------+
//   |                            |      netns epserve-netns-<pid>-1
//   |                            |      +-----------------------+
//   |                            |-veth-| veth0 10.213.N.3, lo  |
//   +----------------------------+      +-----------------------+
//
// N is the first subnet 10.213.N.0/24 no interface of the current namespace
// has an address in (0 unless another topology is up); the host ends of the
// veth pairs are epv<pid>_<index>. Everything is made with
// the `ip` tool (iproute2) and removed by the destructor, also when a test
// fails halfway. Needs root or CAP_NET_ADMIN + CAP_SYS_ADMIN.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace epserve::testing {

// Output and exit status of one `ip` command.
struct IpResult {
  std::string command;  // the command line, for messages
  int exit_code = -1;
  std::string output;  // stdout and stderr
  bool ok() const { return exit_code == 0; }
  std::string Describe() const;  // "`ip ...` exited N: OUTPUT"
};

class NetnsTopology {
 public:
  struct Peer {
    std::string netns;      // namespace name, for `ip netns exec`
    std::string interface;  // its end of the veth pair, inside the namespace
    std::string address;    // IPv4 address of `interface`
  };

  // Builds the topology with `num_peers` namespaces. FAILED_PRECONDITION when
  // this machine cannot host it (no `ip`, no privileges, no bridge or veth
  // support), with the failing command and its output: the caller skips.
  // Other errors are failures of a later step.
  static absl::StatusOr<std::unique_ptr<NetnsTopology>> Create(int num_peers);

  NetnsTopology(const NetnsTopology&) = delete;
  NetnsTopology& operator=(const NetnsTopology&) = delete;
  // Deletes the namespaces, the veth pairs and the bridge.
  ~NetnsTopology();

  const std::string& ip_binary() const { return ip_; }
  const std::string& bridge() const { return bridge_; }
  // IPv4 address of the bridge, reachable from every peer.
  const std::string& bridge_address() const { return bridge_address_; }
  const std::vector<Peer>& peers() const { return peers_; }

  // argv that runs `argv` inside peer `index`'s namespace.
  std::vector<std::string> InPeer(int index, std::vector<std::string> argv) const;

  // Runs `ip ARGS` to completion.
  IpResult Ip(const std::vector<std::string>& args) const;

 private:
  explicit NetnsTopology(std::string ip) : ip_(std::move(ip)) {}
  absl::Status Build(int num_peers);
  // Deletes leftovers of topologies whose test process is gone (killed
  // before its destructor ran).
  void RemoveStale() const;

  std::string ip_;
  std::string bridge_;
  std::string bridge_address_;
  std::vector<std::string> namespaces_;  // created so far
  std::vector<std::string> host_veths_;  // created so far
  std::vector<Peer> peers_;
};

}  // namespace epserve::testing
