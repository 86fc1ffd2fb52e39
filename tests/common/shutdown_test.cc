// InstallShutdownHandler (process-wide, so a binary of its own): a second
// signal reaches the callback while the first call is still running, as a
// forced exit during a stuck drain needs.
#include "common/shutdown.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace epserve {
namespace {

using std::chrono::milliseconds;

TEST(Shutdown, ASecondSignalArrivesWhileTheFirstCallIsStillRunning) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  std::promise<int> second;
  std::future<int> second_signal = second.get_future();
  InstallShutdownHandler([&calls, released, &second](int sig) {
    const int n = ++calls;
    if (n == 1) {
      released.wait();  // a drain that does not end
    } else if (n == 2) {
      second.set_value(sig);
    }
  });
  ASSERT_EQ(raise(SIGTERM), 0);
  for (int i = 0; i < 200 && calls.load() == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  ASSERT_EQ(calls.load(), 1) << "the first signal did not reach the callback";
  ASSERT_EQ(raise(SIGINT), 0);
  ASSERT_EQ(second_signal.wait_for(milliseconds(2000)), std::future_status::ready)
      << "the second signal waited for the first call to return";
  EXPECT_EQ(second_signal.get(), SIGINT);
  release.set_value();
}

}  // namespace
}  // namespace epserve
