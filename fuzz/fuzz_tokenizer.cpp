// tokenizer.json (every model, normalizer, pre-tokenizer, decoder, post-processor, Split's
// Oniguruma patterns): the first line of the input is text to encode (and decode back), the
// rest the tokenizer file.
#include "data/tokenizer/tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  const std::string_view in = fuzz::as_text(data, size);
  const size_t nl = in.find('\n');
  const std::string_view text = nl == std::string_view::npos ? "" : in.substr(0, nl);
  const std::string_view json = nl == std::string_view::npos ? in : in.substr(nl + 1);
  fuzz::expect_clean([&] {
    const data::Tokenizer tok = data::Tokenizer::from_json(json, "fuzz/tokenizer.json");
    for (std::string_view t : {text, std::string_view("Hello, world! 123 \xc3\xa9t\xc3\xa9")}) {
      const std::vector<int32_t> ids = tok.encode(t, true);
      tok.decode(ids, false);
      tok.encode_pair(t, std::string_view("pair"), true, 16);
    }
  });
  return 0;
}
