// SIGTERM / SIGINT handling without async-signal-unsafe code: the signals are
// blocked in every thread and a dedicated thread receives them with sigwait.
#pragma once

#include <functional>

namespace epserve {

// Must be called before any other thread is started, so that every thread
// inherits the blocked mask. `on_signal` runs on the signal thread, once per
// received SIGTERM/SIGINT (a second signal can be used to force an exit).
void InstallShutdownHandler(std::function<void(int signal)> on_signal);

}  // namespace epserve
