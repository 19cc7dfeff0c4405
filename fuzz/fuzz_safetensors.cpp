// A .safetensors file (header JSON, dtypes, shapes, offsets): opened, every tensor read.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  const std::string path = fuzz::write_input("model.safetensors", fuzz::as_text(data, size));
  fuzz::expect_clean([&] {
    const io::SafetensorsFile f = io::SafetensorsFile::open(path);
    for (const auto& e : f.entries()) {
      const Tensor t = f.tensor(e.name);
      if (t.numel() > 0) (void)t.to_vector()[0];
    }
  });
  return 0;
}
