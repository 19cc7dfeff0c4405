// The end of a run in numbers (issue 18): wall time, tokens/s, MFU, each rank's peak memory,
// where the time went (compute, communication wait, data loading, evaluation, checkpoints,
// export) and where the model went, as the text hfrun prints and as output_dir/summary.json.
#pragma once

#include <string>

#include "train/trainer.h"

namespace hfrun::train {

// summary.json's text. peak_gflops > 0: MFU against it (the job's GEMM peak: every rank's,
// measured by the caller); otherwise "mfu" is null.
std::string run_summary_json(const RunSummary& s, double peak_gflops = 0);

// The same for people: a few lines, the first "trained N steps in ...".
std::string run_summary_text(const RunSummary& s, double peak_gflops = 0);

// Writes output_dir/summary.json (atomically).
void write_run_summary(const RunSummary& s, double peak_gflops = 0);

}  // namespace hfrun::train
