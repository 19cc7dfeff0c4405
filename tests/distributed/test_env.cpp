// Launch-environment detection (mpirun, srun, single) from fake environments, and torchrun's
// variables exported from it.
#include <cstdlib>
#include <map>
#include <string>

#include "distributed/comm/env.h"
#include "test_util.h"

namespace hfrun::dist {
namespace {

using hfrun::testing::expect_error_naming;

EnvLookup fake(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(LaunchEnv, SingleWhenNothingIsSet) {
  LaunchEnv e = parse_launch_env(fake({}));
  EXPECT_EQ(e.launcher, "single");
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_world, 1);
}

TEST(LaunchEnv, MpirunFromOmpiVariables) {
  LaunchEnv e = parse_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "5"},
                                       {"OMPI_COMM_WORLD_SIZE", "8"},
                                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                       {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}));
  EXPECT_EQ(e.launcher, "mpirun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world, 4);
}

TEST(LaunchEnv, OmpiWinsOverStaleSlurmInsideSbatch) {
  LaunchEnv e = parse_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "3"},
                                       {"OMPI_COMM_WORLD_SIZE", "4"},
                                       {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
                                       {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                       {"SLURM_PROCID", "0"},
                                       {"SLURM_NTASKS", "1"},
                                       {"SLURM_STEP_ID", "0"},
                                       {"SLURM_LOCALID", "0"}}));
  EXPECT_EQ(e.launcher, "mpirun");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world, 4);
  EXPECT_EQ(e.local_rank, 3);
}

TEST(LaunchEnv, SrunWithPmix) {
  LaunchEnv e = parse_launch_env(fake({{"PMIX_RANK", "6"},
                                       {"SLURM_PROCID", "6"},
                                       {"SLURM_NTASKS", "8"},
                                       {"SLURM_STEP_ID", "2"},
                                       {"SLURM_LOCALID", "2"},
                                       {"SLURM_NODEID", "1"},
                                       {"SLURM_TASKS_PER_NODE", "4(x2)"},
                                       {"SLURM_STEP_NODELIST", "gpu[03-04]"}}));
  EXPECT_EQ(e.launcher, "srun");
  EXPECT_EQ(e.rank, 6);
  EXPECT_EQ(e.world, 8);
  EXPECT_EQ(e.local_rank, 2);
  EXPECT_EQ(e.local_world, 4);
  EXPECT_EQ(e.master_addr, "gpu03");
}

TEST(LaunchEnv, PmixUnderMpirunTakesOmpiSize) {
  LaunchEnv e = parse_launch_env(fake({{"PMIX_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}));
  EXPECT_EQ(e.launcher, "mpirun");
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world, 2);
}

TEST(LaunchEnv, SrunFromSlurmVariables) {
  LaunchEnv e = parse_launch_env(fake({{"SLURM_PROCID", "4"},
                                       {"SLURM_NTASKS", "5"},
                                       {"SLURM_STEP_ID", "0"},
                                       {"SLURM_LOCALID", "0"},
                                       {"SLURM_NODEID", "2"},
                                       {"SLURM_TASKS_PER_NODE", "2(x2),1"},
                                       {"SLURM_NODELIST", "node7,node8"}}));
  EXPECT_EQ(e.launcher, "srun");
  EXPECT_EQ(e.rank, 4);
  EXPECT_EQ(e.world, 5);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_world, 1);  // nodes 0 and 1 run two tasks each, node 2 one
  EXPECT_EQ(e.master_addr, "node7");
}

TEST(LaunchEnv, SbatchScriptWithoutStepIsSingle) {
  // In the batch script itself SLURM_PROCID is 0 and SLURM_NTASKS the allocation's: no launch.
  LaunchEnv e = parse_launch_env(fake({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}}));
  EXPECT_EQ(e.launcher, "single");
  EXPECT_EQ(e.world, 1);
}

TEST(LaunchEnv, MalformedValuesNameTheVariable) {
  expect_error_naming(
      [] {
        parse_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "x1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}));
      },
      {"OMPI_COMM_WORLD_RANK", "x1"});
  expect_error_naming(
      [] {
        parse_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "0"}}));
      },
      {"OMPI_COMM_WORLD_SIZE", "unset"});
  expect_error_naming(
      [] {
        parse_launch_env(fake({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}}));
      },
      {"rank 4", "world size 4"});
  expect_error_naming(
      [] {
        parse_launch_env(fake({{"PMIX_RANK", "0"}}));
      },
      {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK"});
}

TEST(LaunchEnv, FirstSlurmHost) {
  EXPECT_EQ(first_slurm_host("gpu[03-05,9],cpu1"), "gpu03");
  EXPECT_EQ(first_slurm_host("node12"), "node12");
  EXPECT_EQ(first_slurm_host("a,b"), "a");
  EXPECT_EQ(first_slurm_host("rack1-n[7,9]"), "rack1-n7");
  expect_error_naming([] { first_slurm_host("gpu[03"); }, {"gpu[03", "unclosed"});
}

TEST(LaunchEnv, ExportsTorchrunVariables) {
  ::unsetenv("MASTER_ADDR");
  ::setenv("MASTER_PORT", "1234", 1);
  LaunchEnv e{3, 4, 1, 2, "mpirun", ""};
  export_torchrun_env(e);
  EXPECT_STREQ(std::getenv("RANK"), "3");
  EXPECT_STREQ(std::getenv("WORLD_SIZE"), "4");
  EXPECT_STREQ(std::getenv("LOCAL_RANK"), "1");
  EXPECT_STREQ(std::getenv("LOCAL_WORLD_SIZE"), "2");
  EXPECT_STREQ(std::getenv("MASTER_ADDR"), "127.0.0.1");
  EXPECT_STREQ(std::getenv("MASTER_PORT"), "1234");  // a set value is kept
  ::unsetenv("MASTER_ADDR");
  ::unsetenv("MASTER_PORT");
  e.master_addr = "gpu03";
  export_torchrun_env(e);
  EXPECT_STREQ(std::getenv("MASTER_ADDR"), "gpu03");
  EXPECT_STREQ(std::getenv("MASTER_PORT"), "29500");
}

}  // namespace
}  // namespace hfrun::dist
