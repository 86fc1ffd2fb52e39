// Child processes: the router's --local-workers and the integration tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace epserve {

struct SubprocessOptions {
  // Deliver SIGTERM to the child when this process dies (PR_SET_PDEATHSIG),
  // so that a killed router leaves no orphaned workers.
  bool terminate_with_parent = true;
  // Redirect the child's stdout and stderr to this file (appending); empty:
  // inherit the parent's.
  std::string output_path;
  // Variables set (or replaced) in the child's environment, on top of this
  // process's: how secrets reach a child without showing in its argv.
  std::vector<std::pair<std::string, std::string>> env;
};

class Subprocess {
 public:
  // Starts argv[0] (a path) with the given arguments.
  static absl::StatusOr<Subprocess> Spawn(const std::vector<std::string>& argv,
                                          const SubprocessOptions& options);

  // An empty handle (no process).
  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  // Kills (SIGKILL) and reaps a child that is still running.
  ~Subprocess();

  pid_t pid() const { return pid_; }
  void Signal(int signal) const;
  // Waits up to `timeout` for the child to exit. Returns its exit code
  // (128 + N when killed by signal N), or nullopt if it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait `grace`, then SIGKILL. Returns the exit code.
  int Terminate(std::chrono::milliseconds grace);
  bool running() const { return pid_ > 0 && !exit_code_.has_value(); }

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// Directory of the running executable (from /proc/self/exe).
std::string ExecutableDir();

}  // namespace epserve
