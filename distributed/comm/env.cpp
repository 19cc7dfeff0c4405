#include "distributed/comm/env.h"

#include <charconv>
#include <cstdlib>
#include <vector>

#include "common/error.h"

namespace hfrun::dist {
namespace {

int parse_int(const std::string& name, const std::string& value) {
  int out = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  HF_CHECK_INPUT(ec == std::errc() && end == value.data() + value.size() && out >= 0,
                 "launch environment: ", name, "='", value, "' is not a non-negative integer");
  return out;
}

std::optional<int> get_int(const EnvLookup& lookup, const std::string& name) {
  std::optional<std::string> v = lookup(name);
  if (!v) return std::nullopt;
  return parse_int(name, *v);
}

int require_int(const EnvLookup& lookup, const std::string& name, const std::string& why) {
  std::optional<int> v = get_int(lookup, name);
  HF_CHECK_INPUT(v.has_value(), "launch environment: ", why, " but ", name, " is unset");
  return *v;
}

// Tasks on node `node` from SLURM_TASKS_PER_NODE ("2(x3),1": nodes 0-2 run 2, node 3 runs 1).
std::optional<int> slurm_tasks_on_node(const std::string& spec, int node) {
  size_t pos = 0;
  int first = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t paren = item.find("(x");
    int tasks = parse_int("SLURM_TASKS_PER_NODE", item.substr(0, paren));
    int repeat = 1;
    if (paren != std::string::npos) {
      HF_CHECK_INPUT(item.back() == ')', "launch environment: SLURM_TASKS_PER_NODE='", spec,
                     "' is malformed");
      repeat = parse_int("SLURM_TASKS_PER_NODE", item.substr(paren + 2, item.size() - paren - 3));
    }
    if (node < first + repeat) return tasks;
    first += repeat;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return std::nullopt;
}

void fill_slurm_local(const EnvLookup& lookup, LaunchEnv& e) {
  e.local_rank = get_int(lookup, "SLURM_LOCALID").value_or(0);
  std::optional<int> per_node;
  if (auto spec = lookup("SLURM_TASKS_PER_NODE")) {
    per_node = slurm_tasks_on_node(*spec, get_int(lookup, "SLURM_NODEID").value_or(0));
  }
  e.local_world = per_node.value_or(e.world);
  if (auto nodes = lookup("SLURM_STEP_NODELIST")) {
    e.master_addr = first_slurm_host(*nodes);
  } else if (auto job_nodes = lookup("SLURM_NODELIST")) {
    e.master_addr = first_slurm_host(*job_nodes);
  }
}

void validate(const LaunchEnv& e) {
  HF_CHECK_INPUT(e.world >= 1 && e.rank < e.world, "launch environment (", e.launcher, "): rank ",
                 e.rank, " is not below world size ", e.world);
  HF_CHECK_INPUT(e.local_world >= 1 && e.local_rank < e.local_world, "launch environment (",
                 e.launcher, "): local rank ", e.local_rank, " is not below local world size ",
                 e.local_world);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // Up to the first comma outside brackets; a bracket range keeps its first number.
  std::string out;
  for (size_t i = 0; i < nodelist.size(); ++i) {
    char c = nodelist[i];
    if (c == ',') break;
    if (c == '[') {
      size_t close = nodelist.find(']', i);
      HF_CHECK_INPUT(close != std::string::npos, "Slurm node list '", nodelist,
                     "' has an unclosed '['");
      std::string range = nodelist.substr(i + 1, close - i - 1);
      out += range.substr(0, range.find_first_of(",-"));
      i = close;
      continue;
    }
    out += c;
  }
  return out;
}

LaunchEnv parse_launch_env(const EnvLookup& lookup) {
  LaunchEnv e;
  if (auto rank = get_int(lookup, "OMPI_COMM_WORLD_RANK")) {
    e.launcher = "mpirun";
    e.rank = *rank;
    e.world = require_int(lookup, "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK is set");
    e.local_rank = get_int(lookup, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(e.rank);
    e.local_world = get_int(lookup, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(e.world);
  } else if (auto pmix = get_int(lookup, "PMIX_RANK")) {
    e.rank = *pmix;
    if (auto ntasks = get_int(lookup, "SLURM_NTASKS"); ntasks && lookup("SLURM_STEP_ID")) {
      e.launcher = "srun";
      e.world = *ntasks;
      fill_slurm_local(lookup, e);
    } else {
      e.launcher = "mpirun";
      e.world = require_int(lookup, "OMPI_COMM_WORLD_SIZE", "PMIX_RANK is set outside srun");
      e.local_rank = e.rank;
      e.local_world = e.world;
    }
  } else if (lookup("SLURM_STEP_ID") && lookup("SLURM_PROCID")) {
    e.launcher = "srun";
    e.rank = require_int(lookup, "SLURM_PROCID", "SLURM_STEP_ID is set");
    e.world = require_int(lookup, "SLURM_NTASKS", "SLURM_PROCID is set");
    fill_slurm_local(lookup, e);
  }
  validate(e);
  return e;
}

LaunchEnv detect_launch_env() {
  return parse_launch_env([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

void export_torchrun_env(const LaunchEnv& env) {
  auto set = [](const char* name, const std::string& value, bool overwrite) {
    HF_CHECK(::setenv(name, value.c_str(), overwrite ? 1 : 0) == 0,
             "export_torchrun_env: ", "setenv(", name, ") failed");
  };
  set("RANK", std::to_string(env.rank), true);
  set("LOCAL_RANK", std::to_string(env.local_rank), true);
  set("WORLD_SIZE", std::to_string(env.world), true);
  set("LOCAL_WORLD_SIZE", std::to_string(env.local_world), true);
  set("MASTER_ADDR", env.master_addr.empty() ? "127.0.0.1" : env.master_addr, false);
  set("MASTER_PORT", "29500", false);
}

}  // namespace hfrun::dist
