// Minimum stack for threads started with an explicit stack size.
//
// The Debian build of civetweb (the HTTP server under prometheus-cpp's
// Exposer) starts its threads with a fixed 100 KiB stack, and glibc places
// the static TLS of every library loaded at start-up inside each thread's
// stack. In a worker, OpenBLAS alone takes 60 KiB of TLS, which leaves
// civetweb's request handler too little stack: a /metrics scrape overflowed
// it. Every binary that serves metrics links this definition, exported from
// the executable (see CMakeLists.txt), so it takes precedence over libc's:
// requested sizes below kMinStack are raised to it; larger ones pass through.
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cstddef>

namespace {

constexpr size_t kMinStack = size_t{1} << 20;

using SetStackSize = int (*)(pthread_attr_t*, size_t);

SetStackSize RealSetStackSize() {
  static const SetStackSize real =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real;
}

}  // namespace

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) noexcept {
  return RealSetStackSize()(attr, std::max(size, kMinStack));
}
