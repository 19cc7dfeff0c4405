// hfrun [launch options] CONFIG.yaml [--set key.path=value ...]  (and `hfrun train ...`):
// parses and resolves the config, then trains in this process.
#include <boost/program_options.hpp>
#include <iostream>

#include "common/error.h"
#include "launcher/commands.h"
#include "train/trainer.h"

namespace po = boost::program_options;

namespace hfrun::cli {

int cmd_train(const Args& args) {
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t nproc = 0;
  bool dry_run = false, oversubscribe = false;
  std::string hostfile;
  int max_restarts = 0;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")("config", po::value(&config_path), "train.yaml")(
      "set", po::value(&overrides)->composing(),
      "override a config key: key.path=value (repeatable)")(
      "np", po::value(&nproc), "number of processes (default: distributed.num_processes)")(
      "nproc", po::value(&nproc), "alias of -np")("nproc-per-node", po::value(&nproc),
                                                  "torchrun spelling of -np")(
      "hostfile", po::value(&hostfile), "hosts for a multi-node run")(
      "oversubscribe", po::bool_switch(&oversubscribe), "allow more ranks than cores")(
      "max-restarts", po::value(&max_restarts), "restarts after a failure")(
      "dry-run", po::bool_switch(&dry_run),
      "print the resolved config and the launch, start nothing");
  po::positional_options_description pos;
  pos.add("config", 1);
  // `-np 4` is mpirun's spelling: accept it as --np.
  Args fixed;
  for (const auto& a : args) fixed.push_back(a == "-np" ? "--np" : a);
  po::variables_map vm;
  po::store(po::command_line_parser(fixed).options(desc).positional(pos).run(), vm);
  if (vm.count("help") || !vm.count("config")) {
    std::cout << "Usage: hfrun [-np N] CONFIG.yaml [--set key.path=value ...] [--dry-run]\n"
                 "Trains the model CONFIG.yaml describes (keys: see CONTRACT.md / README).\n"
              << desc;
    return vm.count("help") ? 0 : 2;
  }
  po::notify(vm);
  train::TrainConfig cfg = train::TrainConfig::load(config_path, overrides);
  if (nproc > 0) cfg.distributed.num_processes = nproc;
  HF_CHECK_INPUT(cfg.distributed.num_processes == 1 && hostfile.empty(),
                 "multi-process training (-np ", cfg.distributed.num_processes,
                 ") is not available in this build yet; run with -np 1");
  if (dry_run) {
    std::cout << cfg.to_yaml() << "# launch: in this process (1 rank)\n";
    return 0;
  }
  train::Trainer trainer(cfg);
  const train::RunSummary s = trainer.run();
  std::cout << "trained " << s.steps << " steps: loss " << s.first_loss << " -> " << s.last_loss
            << ", " << static_cast<int64_t>(s.tokens_per_s) << " tokens/s; model exported to "
            << s.final_dir << "\n";
  return 0;
}

}  // namespace hfrun::cli
