// SIGTERM / SIGINT handling without async-signal-unsafe code: a process-wide
// handler only writes the signal number to a pipe, and a dedicated thread
// reads it and calls back. Threads that exist before the handler is installed
// (a library's thread pool started while the program loads, e.g. OpenBLAS)
// therefore cannot take the signal's default action and end the process.
#pragma once

#include <functional>

namespace epserve {

// Call once, early in main. `on_signal` runs once per received SIGTERM /
// SIGINT: the first call on a thread of its own (it may block, e.g. while
// draining), later ones on the signal thread, so that a second signal
// reaches `on_signal` while the first call is still running (to force an
// exit). Calls may therefore overlap: `on_signal` must be thread-safe.
void InstallShutdownHandler(std::function<void(int signal)> on_signal);

}  // namespace epserve
