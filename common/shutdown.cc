#include "common/shutdown.h"

#include <pthread.h>
#include <signal.h>

#include <thread>

namespace epserve {

void InstallShutdownHandler(std::function<void(int signal)> on_signal) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A peer that closes a socket must not kill the process.
  signal(SIGPIPE, SIG_IGN);
  std::thread([set, on_signal = std::move(on_signal)] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) == 0) on_signal(sig);
    }
  }).detach();
}

}  // namespace epserve
