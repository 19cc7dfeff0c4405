// A token shard (llm.c's .bin: 256 int32 header, uint16 or uint32 tokens), read as training
// data: every token, and windows of samples.
#include "data/dataset.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  const std::string path = fuzz::write_input("shard.bin", fuzz::as_text(data, size));
  fuzz::expect_clean([&] {
    data::TokenStreamOptions o;
    o.num_threads = 1;
    const data::TokenStream s({path}, nullptr, std::nullopt, o);
    for (int64_t i = 0; i < s.size() && i < 4096; ++i) (void)s.token(i);
    if (s.num_samples(8) > 0) s.read(0, 9);
  });
  return 0;
}
