// A .safetensors file (header JSON, dtypes, shapes, offsets): opened, every tensor read. An
// input that starts with '{' is instead a sharded checkpoint's model.safetensors.index.json,
// next to two small valid shards (a.safetensors: "w" and "b"; b.safetensors: "v") that its
// weight_map may name: the checkpoint is opened as from_pretrained does and every tensor read.
#include <cstring>

#include "fuzz_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

namespace {

std::string shard(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);  // little-endian hosts only, as the format
  return out + header + data;
}

void read_all(const hfrun::io::SafetensorsCheckpoint& c) {
  for (const std::string& name : c.names()) {
    const hfrun::Tensor t = c.tensor(name);
    if (t.numel() > 0) (void)t.to_vector()[0];
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hfrun;
  if (size > 0 && data[0] == '{') {
    static const bool shards_written = [] {
      std::filesystem::create_directories(fuzz::scratch_dir() / "index");
      const std::string f32(16, '\0'), bf16 = "\x80\x3f\x80\x3f";
      fuzz::write_input("index/a.safetensors",
                        shard(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                              R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}})",
                              f32 + bf16));
      fuzz::write_input(
          "index/b.safetensors",
          shard(R"({"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')));
      return true;
    }();
    (void)shards_written;
    fuzz::write_input("index/model.safetensors.index.json", fuzz::as_text(data, size));
    fuzz::expect_clean([&] {
      read_all(io::SafetensorsCheckpoint::open((fuzz::scratch_dir() / "index").string()));
    });
    return 0;
  }
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
