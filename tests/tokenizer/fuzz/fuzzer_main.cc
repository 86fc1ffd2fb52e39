// libFuzzer entry point (clang builds only):
//   ./tokenizer_fuzzer -max_total_time=60 tests/tokenizer/fuzz/seeds
#include <cstdio>
#include <cstdlib>

#include "tests/tokenizer/fuzz/encode_decode_fuzzer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string failure = epserve::tokenizer::fuzz::EncodeDecodeFuzzOne(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "property violated: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}
