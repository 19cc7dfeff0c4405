// hfrun prepare: text sources (.txt, .jsonl) -> llm.c token shards (.bin).
//
// The shards hold exactly the training token stream of data/dataset.h: documents in order, the
// tokenizer's end-of-text token between consecutive documents, cut into shards of at most
// shard_tokens tokens wherever the limit falls. Because a stream over shards concatenates
// them as they are, training on the output directory sees the same tokens as training on the
// text sources. Documents are tokenized in parallel; the output does not depend on the thread
// count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"

namespace hfrun::data {

struct PrepareOptions {
  std::string output_dir;
  std::string prefix = "shard";  // files are <prefix>_000000.bin, <prefix>_000001.bin, ...
  int64_t shard_tokens = 100'000'000;
  int num_threads = 0;  // 0 = hardware threads
  std::string text_field = "text";
  bool overwrite = false;          // replace existing <prefix>_*.bin files in output_dir
  int64_t batch_bytes = 64 << 20;  // text read ahead and tokenized together
};

struct PrepareStats {
  int64_t documents = 0;
  int64_t tokens = 0;  // including end-of-text separators
  int64_t text_bytes = 0;
  int64_t shards = 0;
  int shard_version = 1;  // 1 = uint16 tokens, 2 = uint32
  double seconds = 0;
  std::vector<std::string> shard_paths;
};

// Called after each batch is written (documents/tokens/bytes so far).
using PrepareProgress = std::function<void(const PrepareStats&)>;

PrepareStats prepare_shards(const std::vector<std::string>& sources, const Tokenizer& tokenizer,
                            const PrepareOptions& options, const PrepareProgress& progress = {});

}  // namespace hfrun::data
