// SIGTERM / SIGINT handling without async-signal-unsafe code: a process-wide
// handler only writes the signal number to a pipe, and a dedicated thread
// reads it and calls back. Threads that exist before the handler is installed
// (a library's thread pool started while the program loads, e.g. OpenBLAS)
// therefore cannot take the signal's default action and end the process.
#pragma once

#include <functional>

namespace epserve {

// Call once, early in main. `on_signal` runs on the signal thread, once per
// received SIGTERM/SIGINT (a second signal can be used to force an exit).
void InstallShutdownHandler(std::function<void(int signal)> on_signal);

}  // namespace epserve
