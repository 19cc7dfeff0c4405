// PLACEHOLDER
#include "bench/bench.h"
#include "common/error.h"
namespace hfrun::bench { std::string run_matmul_bench(const MatmulBenchOptions&) { HF_THROW("not built yet"); } }
