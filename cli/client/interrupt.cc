#include "cli/client/interrupt.h"

#include <pthread.h>
#include <signal.h>

#include <ctime>

namespace epserve::client {
namespace {

sigset_t InterruptSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

InterruptWatcher::InterruptWatcher() {
  sigset_t set = InterruptSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

InterruptWatcher::~InterruptWatcher() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void InterruptWatcher::Watch(std::function<void()> on_interrupt) {
  thread_ = std::thread([this, on_interrupt = std::move(on_interrupt)] {
    const sigset_t set = InterruptSet();
    // Wakes every 100 ms to notice the destructor.
    const timespec tick{0, 100'000'000};
    while (!stop_) {
      if (sigtimedwait(&set, nullptr, &tick) == SIGINT) {
        interrupted_ = true;
        on_interrupt();
        return;
      }
    }
  });
}

}  // namespace epserve::client
