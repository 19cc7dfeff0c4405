// distributed.debug: a ProcessGroup that checks, before each collective, that every rank of the
// group calls the same op on the same sizes and dtype, and fails at once on every rank naming
// the call sites that differ, where a mismatch would otherwise hang until the timeout or, worse,
// reduce unrelated buffers into each other:
//   distributed.debug: the ranks of group world disagree on collective #12: rank 0 calls
//   allreduce of 1 i32 (max) at train/accelerator.cpp:140; rank 1 calls allgather of 64 u8 per
//   rank at train/checkpoint_save.cpp:180
// The check is an allgather of a 256-byte description of the call over `check` (a CPU group of
// the same ranks: the group itself, or the MPI group an NCCL group was made over). Point-to-
// point ops pass through unchecked.
#pragma once

#include <memory>

#include "distributed/comm/process_group.h"

namespace hfrun::dist {

std::shared_ptr<ProcessGroup> check_collectives(std::shared_ptr<ProcessGroup> inner,
                                                std::shared_ptr<ProcessGroup> check);

}  // namespace hfrun::dist
