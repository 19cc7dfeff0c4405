// train.yaml with --set overrides: the input's lines starting with "--set " are overrides, the
// rest the YAML; parsed, validated, written back as resolved YAML and parsed again.
#include <sstream>
#include <vector>

#include "fuzz_util.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  std::string yaml;
  std::vector<std::string> sets;
  std::istringstream in{std::string(fuzz::as_text(data, size))};
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("--set ", 0) == 0) {
      sets.push_back(line.substr(6));
    } else {
      yaml += line + "\n";
    }
  }
  fuzz::expect_clean([&] {
    const train::TrainConfig c = train::TrainConfig::parse(yaml, "fuzz.yaml", sets);
    train::TrainConfig::parse(c.to_yaml(), "resolved.yaml");
  });
  return 0;
}
