// The flight recorder: per process, for each (group, rank) the last collective issued and the
// last completed, with when. When a collective times out, the launcher asks every rank for its
// record (SIGUSR2; launcher/job_records.cpp answers) and the report says which rank never
// entered the op the others wait in, and what it was doing instead (common/phase.h):
//   hfrun: rank 1 (host h, pid 42) never entered allreduce #812 of group world: it completed
//   #811 3.1 s ago and is in "checkpoint save"
// Work's constructor and completion feed it, so every backend is recorded.
#pragma once

#include <string>

#include "distributed/comm/process_group.h"

namespace hfrun::dist {

void flight_issued(const WorkInfo& info);
void flight_completed(const WorkInfo& info);

// One line per (group, rank) this process used, as JSON objects in an array:
//   [{"group": "world", "rank": 1, "issued_op": "allreduce", "issued": 812, "bytes": 64,
//     "issued_s_ago": 0.4, "issued_phase": "training step", "completed": 811,
//     "completed_s_ago": 0.5}]
// with "phase" (current_phase()) in an enclosing object: {"phase": "...", "groups": [...]}.
std::string flight_record_json();

}  // namespace hfrun::dist
