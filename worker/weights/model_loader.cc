#include "worker/weights/model_loader.h"

#include <utility>

#include "common/model_config/model_config.h"
#include "common/status.h"

namespace epserve::weights {

absl::StatusOr<LoadedModel> LoadModel(const std::string& model_dir,
                                      const kernels::DeviceSpec& device,
                                      const kernels::BackendOptions& backend_options,
                                      LoadOptions load) {
  LoadedModel model;
  ASSIGN_OR_RETURN(model.desc, LoadModelConfig(model_dir));
  // The backend first: on a GPU, dummy weights are made in device memory and
  // the weights' size is checked against it before anything is loaded.
  ASSIGN_OR_RETURN(model.backend, kernels::CreateBackend(device, backend_options));
  load.device = model.backend.get();
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(model.desc, model_dir, load));
  model.weights = std::make_unique<ModelWeights>(std::move(weights));
  return model;
}

}  // namespace epserve::weights
