#include "common/shutdown.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <thread>

namespace epserve {
namespace {

int g_signal_pipe[2] = {-1, -1};

// Async-signal-safe: one write of one byte.
void OnSignal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

}  // namespace

void InstallShutdownHandler(std::function<void(int signal)> on_signal) {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return;
  auto callback = std::make_shared<std::function<void(int)>>(std::move(on_signal));
  std::thread([callback] {
    unsigned char byte = 0;
    bool first = true;
    while (true) {
      const ssize_t n = read(g_signal_pipe[0], &byte, 1);
      if (n == 1) {
        if (first) {
          // The first call may block (a drain); later signals must still
          // reach the callback meanwhile.
          first = false;
          const int sig = byte;
          std::thread([callback, sig] { (*callback)(sig); }).detach();
        } else {
          (*callback)(byte);
        }
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return;
      }
    }
  }).detach();
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  // A peer that closes a socket must not kill the process.
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace epserve
