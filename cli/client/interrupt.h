// Ctrl-C handling for commands that hold a streaming call: SIGINT is taken
// off the normal delivery path and turned into a callback on a watcher
// thread, where it is safe to call grpc::ClientContext::TryCancel (a signal
// handler may not).
#pragma once

#include <atomic>
#include <functional>
#include <thread>

namespace epserve::client {

class InterruptWatcher {
 public:
  // Blocks SIGINT in the calling thread, and so in every thread it starts
  // afterwards: construct it before the first gRPC channel.
  InterruptWatcher();
  // Stops watching; SIGINT stays blocked.
  ~InterruptWatcher();
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;

  // Starts watching; `on_interrupt` runs on the watcher thread at the first
  // SIGINT. Call at most once.
  void Watch(std::function<void()> on_interrupt);
  bool interrupted() const { return interrupted_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> interrupted_{false};
  std::thread thread_;
};

}  // namespace epserve::client
