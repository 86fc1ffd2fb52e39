// One model, ready to run: its description (config.json), a backend for the
// device, and this rank's weights placed through that backend.
//
//   model_dir ──LoadModelConfig──► desc ──CreateBackend(device)──► backend
//             ──LoadWeights(desc, model_dir, load on backend)──► weights
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "kernels/device.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "worker/weights/weight_loader.h"

namespace epserve::weights {

struct LoadedModel {
  ModelDescription desc;
  std::unique_ptr<kernels::Backend> backend;  // never null
  // Never null; weights->desc() equals desc. Tensors live in backend's
  // memory, so the backend must outlive them (destroy weights first).
  std::unique_ptr<ModelWeights> weights;
};

// Reads `model_dir`'s config.json, creates the backend for `device` with
// `backend_options`, then loads the weights with `load`, whose `device` is
// set to that backend (dummy weights are made in its memory and every linear
// layer's format is checked against it). `load.backend`, the backend's name
// in messages, is the caller's. Errors, first one wins in this order:
// LoadModelConfig's (they name the directory), CreateBackend's, LoadWeights'.
absl::StatusOr<LoadedModel> LoadModel(const std::string& model_dir,
                                      const kernels::DeviceSpec& device,
                                      const kernels::BackendOptions& backend_options,
                                      LoadOptions load);

}  // namespace epserve::weights
