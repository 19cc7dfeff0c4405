// What this process is doing, in a word or two ("step", "checkpoint save", "evaluation"): the
// hang report of a job names it for a rank that never entered the collective the others wait in
// (distributed/comm/flight_recorder.h). Process-wide; set by the Trainer around its phases.
#pragma once

namespace hfrun {

// `phase` must be a string literal (it is kept by pointer).
void set_phase(const char* phase);
const char* current_phase();  // "" before any

// Sets a phase for a scope and restores the previous one after it.
class ScopedPhase {
 public:
  explicit ScopedPhase(const char* phase) : previous_(current_phase()) { set_phase(phase); }
  ~ScopedPhase() { set_phase(previous_); }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  const char* previous_;
};

}  // namespace hfrun
