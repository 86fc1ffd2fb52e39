#include "tests/netns/netns_topology.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/subprocess.h"

namespace epserve::testing {
namespace {

constexpr char kNetnsPrefix[] = "epserve-netns-";
constexpr char kBridgePrefix[] = "epbr";
constexpr char kVethPrefix[] = "epv";
// Name of each peer's end of its veth pair, inside its own namespace.
constexpr char kPeerInterface[] = "veth0";
constexpr int kCommandTimeoutS = 20;
// Machine-wide, whatever TMPDIR says: every test process picks its subnet
// under it.
constexpr char kLockPath[] = "/tmp/epserve_netns_topology.lock";

// `ip` from PATH, else from the sbin folders a non-login PATH may lack.
std::string FindIp() {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) dirs = absl::StrSplit(path, ':', absl::SkipEmpty());
  for (const char* d : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) dirs.push_back(d);
  for (const std::string& dir : dirs) {
    std::string candidate = dir + "/ip";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// True when `pid` names no process (a topology whose owner is gone).
bool ProcessGone(const std::string& pid_text) {
  int pid = 0;
  if (!absl::SimpleAtoi(pid_text, &pid) || pid <= 0 || pid == getpid()) return false;
  return kill(pid, 0) != 0 && errno == ESRCH;
}

// Third octets N of the 10.213.N.0/24 subnets some local interface has an
// address in.
std::set<int> UsedSubnets() {
  std::set<int> used;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return used;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_INET) continue;
    uint32_t a = ntohl(reinterpret_cast<const sockaddr_in*>(it->ifa_addr)->sin_addr.s_addr);
    if ((a >> 24) == 10 && ((a >> 16) & 0xff) == 213)
      used.insert(static_cast<int>((a >> 8) & 0xff));
  }
  freeifaddrs(list);
  return used;
}

// An exclusive flock held for the object's lifetime: topologies of
// concurrent test processes pick their subnets one at a time.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(open(path.c_str(), O_CREAT | O_RDWR, 0666)) {
    if (fd_ >= 0) flock(fd_, LOCK_EX);
  }
  ~FileLock() {
    if (fd_ >= 0) close(fd_);  // releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

}  // namespace

std::string IpResult::Describe() const {
  std::string shown = output.empty() ? "(no output)" : output;
  while (!shown.empty() && shown.back() == '\n') shown.pop_back();
  if (exit_code < 0) return absl::StrCat("`", command, "` did not finish: ", shown);
  return absl::StrCat("`", command, "` exited ", exit_code, ": ", shown);
}

absl::StatusOr<std::unique_ptr<NetnsTopology>> NetnsTopology::Create(int num_peers) {
  std::string ip = FindIp();
  if (ip.empty()) {
    return absl::FailedPreconditionError("no `ip` binary (iproute2) in PATH, /usr/sbin or /sbin");
  }
  // The destructor removes whatever Build made before it failed.
  std::unique_ptr<NetnsTopology> topology(new NetnsTopology(ip));
  absl::Status built = topology->Build(num_peers);
  if (!built.ok()) return built;
  return topology;
}

NetnsTopology::~NetnsTopology() {
  auto remove = [&](const std::vector<std::string>& args) {
    IpResult r = Ip(args);
    if (!r.ok() && r.output.find("Cannot find device") == std::string::npos) {
      std::cerr << "netns topology clean-up: " << r.Describe() << "\n";
    }
  };
  // A namespace takes its end of the veth pair along, and with it the
  // host's end.
  for (const std::string& ns : namespaces_) remove({"netns", "delete", ns});
  for (const std::string& veth : host_veths_) {
    if (Ip({"link", "show", "dev", veth}).ok()) remove({"link", "delete", veth});
  }
  if (!bridge_.empty()) remove({"link", "delete", bridge_});
}

std::vector<std::string> NetnsTopology::InPeer(int index, std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {ip_, "netns", "exec", peers_.at(index).netns});
  return argv;
}

IpResult NetnsTopology::Ip(const std::vector<std::string>& args) const {
  IpResult result;
  result.command = absl::StrCat("ip ", absl::StrJoin(args, " "));
  std::string log =
      (std::filesystem::temp_directory_path() / absl::StrCat("epserve_netns_ip_", getpid(), ".log"))
          .string();
  std::filesystem::remove(log);
  std::vector<std::string> argv = {ip_};
  argv.insert(argv.end(), args.begin(), args.end());
  auto proc = Subprocess::Spawn(argv, SubprocessOptions{true, log});
  if (!proc.ok()) {
    result.output = std::string(proc.status().message());
    return result;
  }
  std::optional<int> code = proc->Wait(std::chrono::seconds(kCommandTimeoutS));
  if (!code) proc->Terminate(std::chrono::seconds(1));
  result.exit_code = code.value_or(-1);
  std::ifstream in(log);
  std::stringstream buf;
  buf << in.rdbuf();
  result.output = buf.str();
  std::filesystem::remove(log);
  return result;
}

void NetnsTopology::RemoveStale() const {
  IpResult namespaces = Ip({"netns", "list"});
  if (namespaces.ok()) {
    // Lines: "NAME" or "NAME (id: K)"; ours are PREFIX<pid>-<index>.
    for (absl::string_view line : absl::StrSplit(namespaces.output, '\n', absl::SkipEmpty())) {
      absl::string_view name = line.substr(0, line.find(' '));
      absl::string_view rest = name;
      if (!absl::ConsumePrefix(&rest, kNetnsPrefix)) continue;
      if (ProcessGone(std::string(rest.substr(0, rest.find('-'))))) {
        Ip({"netns", "delete", std::string(name)});
      }
    }
  }
  // Lines: "K: NAME: <FLAGS> ..." or "K: NAME@PEER: <FLAGS> ...".
  for (const auto& [type, prefix, separator] :
       {std::tuple<const char*, const char*, char>{"bridge", kBridgePrefix, '\0'},
        std::tuple<const char*, const char*, char>{"veth", kVethPrefix, '_'}}) {
    IpResult links = Ip({"-o", "link", "show", "type", type});
    if (!links.ok()) continue;
    for (absl::string_view line : absl::StrSplit(links.output, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> fields = absl::StrSplit(line, ": ");
      if (fields.size() < 2) continue;
      absl::string_view name = fields[1].substr(0, fields[1].find('@'));
      absl::string_view rest = name;
      if (!absl::ConsumePrefix(&rest, prefix)) continue;
      if (separator != '\0') rest = rest.substr(0, rest.find(separator));
      if (ProcessGone(std::string(rest))) Ip({"link", "delete", std::string(name)});
    }
  }
}

absl::Status NetnsTopology::Build(int num_peers) {
  RemoveStale();
  const std::string pid = absl::StrCat(getpid());
  auto precondition = [](const IpResult& r) {
    return absl::FailedPreconditionError(absl::StrCat("cannot build the network: ", r.Describe()));
  };
  auto failed = [](const IpResult& r) {
    return absl::InternalError(absl::StrCat("building the network: ", r.Describe()));
  };

  for (int i = 0; i < num_peers; ++i) {
    std::string ns = absl::StrCat(kNetnsPrefix, pid, "-", i);
    IpResult r = Ip({"netns", "add", ns});
    if (!r.ok()) return precondition(r);
    namespaces_.push_back(ns);
    peers_.push_back(Peer{ns, kPeerInterface, ""});
  }

  std::string subnet;
  {
    FileLock lock(kLockPath);
    std::set<int> used = UsedSubnets();
    int octet = 0;
    while (octet < 256 && used.count(octet) != 0) ++octet;
    if (octet == 256) {
      return absl::FailedPreconditionError("every subnet 10.213.N.0/24 is already in use here");
    }
    subnet = absl::StrCat("10.213.", octet, ".");
    bridge_address_ = subnet + "1";
    std::string bridge = kBridgePrefix + pid;
    IpResult r = Ip({"link", "add", "name", bridge, "type", "bridge"});
    if (!r.ok()) return precondition(r);
    bridge_ = bridge;
    r = Ip({"address", "add", bridge_address_ + "/24", "dev", bridge_});
    if (!r.ok()) return failed(r);
  }
  IpResult r = Ip({"link", "set", "dev", bridge_, "up"});
  if (!r.ok()) return failed(r);

  for (int i = 0; i < num_peers; ++i) {
    Peer& peer = peers_[i];
    peer.address = absl::StrCat(subnet, 2 + i);
    std::string host_veth = absl::StrCat(kVethPrefix, pid, "_", i);
    r = Ip({"link", "add", "name", host_veth, "type", "veth", "peer", "name", peer.interface,
            "netns", peer.netns});
    if (!r.ok()) return precondition(r);
    host_veths_.push_back(host_veth);
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"link", "set", "dev", host_veth, "master", bridge_},
             {"link", "set", "dev", host_veth, "up"},
             {"-n", peer.netns, "link", "set", "dev", "lo", "up"},
             {"-n", peer.netns, "address", "add", peer.address + "/24", "dev", peer.interface},
             {"-n", peer.netns, "link", "set", "dev", peer.interface, "up"},
         }) {
      r = Ip(args);
      if (!r.ok()) return failed(r);
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::testing
