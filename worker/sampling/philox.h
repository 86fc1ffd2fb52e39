// Counter-based random numbers for per-request sampling.
//
// Every draw is a pure function of (seed, step, lane): no generator state is
// carried between calls, so a request's tokens do not depend on what else is
// in the batch, on row order, on threads, or on how many draws other requests
// made. A CUDA kernel reproduces the same stream by calling the same
// function. Philox4x32-10 is the generator of Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3" (SC'11), also used by cuRAND and PyTorch.
#pragma once

#include <array>
#include <cstdint>

namespace epserve::sampling {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds of Philox4x32 on `counter` under `key`.
PhiloxCounter Philox4x32(PhiloxCounter counter, PhiloxKey key);

// Uniform double in [0, 1) with 53 random bits, for request `seed` at
// generation `step`. `lane` selects an independent stream within one step
// (the sampler uses lane 0).
double UniformDouble(uint64_t seed, uint64_t step, uint32_t lane = 0);

// A fresh 64-bit seed from a process-wide source (random_device-initialised,
// SplitMix64-mixed atomic counter); thread-safe. Used for requests without a
// seed; the router may also call it to pin a seed at admission.
uint64_t DrawSeed();

}  // namespace epserve::sampling
