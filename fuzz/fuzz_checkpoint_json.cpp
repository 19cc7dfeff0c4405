// A checkpoint's manifest.json and a PEFT adapter's adapter_config.json (the first byte picks),
// read as resuming and --adapter read them.
#include <filesystem>

#include "fuzz_util.h"
#include "models/peft.h"
#include "train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  if (size == 0) return 0;
  const std::string_view body = fuzz::as_text(data + 1, size - 1);
  const std::filesystem::path dir = fuzz::scratch_dir() / "ckpt";
  std::filesystem::create_directories(dir);
  if (data[0] % 2 == 0) {
    fuzz::write_input("ckpt/manifest.json", body);
    fuzz::expect_clean([&] { train::read_manifest(dir.string()); });
  } else {
    fuzz::write_input("ckpt/adapter_config.json", body);
    fuzz::expect_clean([&] { nn::read_peft_config(dir.string()); });
  }
  return 0;
}
