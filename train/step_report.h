// The Trainer's per-step reporting and its test hooks (internal to train/): the non-finite
// faults a test injects, the reason a step was skipped, and a step's metrics.jsonl line.
#pragma once

#include <cstdint>
#include <string>

#include "train/accelerator.h"
#include "train/trainer.h"

namespace hfrun::train::detail {

// Test hook (the non-finite guard's and loss scaling's tests): HFRUN_FAULT_NONFINITE=R:A[:N]
// makes rank R's loss infinite in its step attempts A .. A+N-1 (counted in this process,
// skipped ones included); R:A:N:grad leaves the loss finite and puts an inf into the first
// element of the first gradient rank R's optimizer reads, after backward (an overflow in the
// backward pass). Several specs: comma-separated.
enum class Poison { kNone, kLoss, kGrad };
Poison nonfinite_fault(int rank, int64_t attempt);
// The kGrad fault: an inf in the first element of the first gradient this rank's optimizer reads.
void poison_first_gradient(Accelerator& acc);

// "loss inf on rank 2", "grad_norm nan", ...: what was not finite, and on which ranks the
// local loss already was (collective: every rank calls it with its own loss).
std::string nonfinite_reason(Accelerator& acc, double local_loss, double loss, double grad_norm);

// A step's (or an evaluation's) metrics.jsonl line.
std::string format_metrics(const StepMetrics& m);

}  // namespace hfrun::train::detail
