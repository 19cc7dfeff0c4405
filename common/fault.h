// Deterministic fault injection for the crash-safety tests (tests/train/test_kill_soak.sh): named
// points where a test may kill this process, counted per process in the order it passes them
// (after each optimizer step, inside and between checkpoint and export file writes, around a
// checkpoint's commit). Nothing happens unless one of these is set:
//  - HFRUN_FAULT_KILL="RANK:N": the process of rank RANK (job_rank_from_env; 0 outside a job)
//    SIGKILLs itself at its N-th point (N >= 1), as a power cut or the OOM killer would.
//  - HFRUN_FAULT_TRACE=FILE: every point appends "N WHERE" to FILE.RANK, so a test learns the
//    points of an uninterrupted run and picks where to kill.
//  - HFRUN_FAULT_STALL="RANK:WHERE:SECONDS": rank RANK sleeps SECONDS at its first point named
//    WHERE, as a process stuck on a hung filesystem would (inside a checkpoint write, say).
#pragma once

namespace hfrun::fault {

// `where` is a short static name ("step", "checkpoint.commit", "file.written", ...).
void point(const char* where);

}  // namespace hfrun::fault
