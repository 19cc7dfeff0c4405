// hfrun's subcommands. Each takes the arguments after its name and returns the exit code
// (0 ok, 1 runtime failure, 2 bad usage); errors propagate as hfrun::Error to main().
#pragma once

#include <string>
#include <vector>

namespace hfrun::cli {

using Args = std::vector<std::string>;

int cmd_env(const Args& args);
int cmd_bench(const Args& args);
int cmd_tokenize(const Args& args);
int cmd_prepare(const Args& args);
int cmd_train(const Args& args);
int cmd_generate(const Args& args);
int cmd_merge(const Args& args);
int cmd_report(const Args& args);
int cmd_estimate_memory(const Args& args);

}  // namespace hfrun::cli
