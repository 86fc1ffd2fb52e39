// `epserve-run inspect`: what epserve makes of a model directory, read from
// config.json and the safetensors headers only (no weight bytes):
//
//   epserve-run inspect --model DIR [--load-format auto|dummy] [--dtype D]
//                       [--expert-parallel N] [--placement linear|round-robin]
//                       [--device cpu|cuda:K]
//
// Prints one JSON object: the normalised description (architecture, layer
// kinds, attention shape, rope, experts, quantization), parameter counts
// (total and active per token), bytes by dtype, the checkpoint check
// (missing, mis-shaped, unexpected tensors; packed expert layers) and, with
// --expert-parallel, each rank's experts and bytes; with --device, whether
// the largest rank's weights fit that device's memory. Exit 0 when the model
// can be loaded, 1 when not (the JSON says why), 2 for bad arguments.
#pragma once

#include <ostream>

namespace epserve::cli {

int RunInspectCommand(int argc, char** argv);
int RunInspectCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace epserve::cli
