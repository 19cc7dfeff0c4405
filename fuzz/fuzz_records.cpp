// Fine-tuning records: .jsonl, .csv or .tsv (the first byte picks), every field of every record.
#include "data/records.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  if (size == 0) return 0;
  const char* names[] = {"records.jsonl", "records.csv", "records.tsv"};
  const std::string path = fuzz::write_input(names[data[0] % 3], fuzz::as_text(data + 1, size - 1));
  fuzz::expect_clean([&] {
    const data::Records r = data::Records::read({path});
    for (size_t i = 0; i < r.size(); ++i) {
      for (const std::string& f : r.fields()) r.get(i, f);
      r.origin(i);
    }
  });
  return 0;
}
