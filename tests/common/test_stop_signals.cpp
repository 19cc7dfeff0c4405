// StopSignals turns SIGTERM/SIGUSR1/SIGINT into a flag the training loop reads at step
// boundaries, instead of the default action (process death).
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>

#include "common/stop_signals.h"

namespace hfrun {
namespace {

struct Clean {
  Clean() { StopSignals::clear(); }
  ~Clean() { StopSignals::clear(); }
};

TEST(StopSignals, RecordsTheFirstSignalInsteadOfDying) {
  Clean clean;
  StopSignals guard;
  EXPECT_EQ(StopSignals::pending(), 0);
  std::raise(SIGTERM);  // would end the test binary without the handler
  EXPECT_EQ(StopSignals::pending(), SIGTERM);
  std::raise(SIGUSR1);  // repeats (mpirun forwarding, Slurm) keep the first
  std::raise(SIGTERM);
  EXPECT_EQ(StopSignals::pending(), SIGTERM);
}

TEST(StopSignals, Usr1AndIntAreStopsToo) {
  Clean clean;
  {
    StopSignals guard;
    std::raise(SIGUSR1);
    EXPECT_EQ(StopSignals::pending(), SIGUSR1);
  }
  StopSignals::clear();
  {
    StopSignals guard;
    std::raise(SIGINT);
    EXPECT_EQ(StopSignals::pending(), SIGINT);
  }
}

TEST(StopSignals, SecondCtrlCEndsTheProcess) {
  Clean clean;
  EXPECT_EXIT(
      {
        StopSignals guard;
        std::raise(SIGINT);
        std::raise(SIGINT);
        std::exit(0);
      },
      testing::KilledBySignal(SIGINT), "");
}

TEST(StopSignals, PreviousHandlersComeBack) {
  Clean clean;
  static volatile std::sig_atomic_t seen = 0;
  struct sigaction mine {
  }, old{};
  mine.sa_handler = [](int sig) { seen = sig; };
  sigemptyset(&mine.sa_mask);
  sigaction(SIGUSR1, &mine, &old);
  {
    StopSignals outer;
    {
      StopSignals inner;  // nested: only the outermost installs and restores
    }
    std::raise(SIGUSR1);
    EXPECT_EQ(StopSignals::pending(), SIGUSR1);
    EXPECT_EQ(seen, 0);
  }
  std::raise(SIGUSR1);
  EXPECT_EQ(seen, SIGUSR1);
  sigaction(SIGUSR1, &old, nullptr);
}

TEST(StopSignals, RestartCountFromTheLauncherOrSlurm) {
  unsetenv("HFRUN_RESTART_COUNT");
  unsetenv("SLURM_RESTART_COUNT");
  EXPECT_EQ(restart_count(), 0);
  setenv("SLURM_RESTART_COUNT", "2", 1);
  EXPECT_EQ(restart_count(), 2);
  setenv("HFRUN_RESTART_COUNT", "3", 1);
  EXPECT_EQ(restart_count(), 3);
  unsetenv("HFRUN_RESTART_COUNT");
  unsetenv("SLURM_RESTART_COUNT");
  EXPECT_EQ(signal_name(SIGTERM), "SIGTERM");
  EXPECT_EQ(signal_name(SIGUSR1), "SIGUSR1");
}

}  // namespace
}  // namespace hfrun
