#include "worker/sampling/philox.h"

#include <atomic>
#include <chrono>
#include <random>

namespace epserve::sampling {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t InitialSeedState() {
  std::random_device device;
  const uint64_t entropy = (uint64_t{device()} << 32) ^ device();
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  return SplitMix64(entropy ^ static_cast<uint64_t>(now));
}

}  // namespace

PhiloxCounter Philox4x32(PhiloxCounter c, PhiloxKey k) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kMul0} * c[0];
    const uint64_t p1 = uint64_t{kMul1} * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
    k[0] += kWeyl0;
    k[1] += kWeyl1;
  }
  return c;
}

double UniformDouble(uint64_t seed, uint64_t step, uint32_t lane) {
  const PhiloxCounter out =
      Philox4x32({static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32), lane, 0},
                 {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  const uint64_t bits = (uint64_t{out[0]} << 32) | out[1];
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

uint64_t DrawSeed() {
  static std::atomic<uint64_t> state{InitialSeedState()};
  return SplitMix64(state.fetch_add(0x9E3779B97F4A7C15ull, std::memory_order_relaxed));
}

}  // namespace epserve::sampling
