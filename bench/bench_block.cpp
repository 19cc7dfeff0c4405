// PLACEHOLDER
#include "bench/bench.h"
#include "common/error.h"
namespace hfrun::bench { std::string run_block_bench(const BlockBenchOptions&) { HF_THROW("not built yet"); } }
