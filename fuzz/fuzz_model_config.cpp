// config.json of every family (gpt2, llama/mistral/qwen2/qwen3, bert) and task: read and
// validated as the registry does, and its shape derived (no model is built: a huge config must
// not allocate).
#include "fuzz_util.h"
#include "models/registry.h"
#include "models/shape.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  if (size == 0) return 0;
  const nn::Task tasks[] = {nn::Task::kCausalLM, nn::Task::kMaskedLM,
                            nn::Task::kSequenceClassification};
  const nn::Task task = tasks[data[0] % 3];
  const std::string json(fuzz::as_text(data + 1, size - 1));
  fuzz::expect_clean([&] {
    const std::string type = nn::model_type_of(json, "config.json", "gpt2");
    nn::check_model_config(json, "config.json", type);
    const nn::ModelShape s = nn::model_shape(json, "config.json", type, task);
    (void)s.parameters();
  });
  return 0;
}
