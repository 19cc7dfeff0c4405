// hfrun merge: a LoRA adapter (PEFT format) folded into its base model, written as a plain
// Hugging Face model directory (W + s * B A in every adapted layer; modules_to_save copies
// replace the base's).
#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/error.h"
#include "launcher/commands.h"
#include "models/peft.h"
#include "models/registry.h"
#include "train/export.h"

namespace po = boost::program_options;

namespace hfrun::cli {

int cmd_merge(const Args& args) {
  std::string base, adapter, output;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "base", po::value(&base)->required(),
      "the base model: a Hugging Face model directory or hub id ORG/NAME")(
      "adapter", po::value(&adapter)->required(),
      "a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)")(
      "output", po::value(&output)->required(), "the merged model's directory (replaced)");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun merge --base DIR --adapter DIR --output DIR\n"
                 "Folds a LoRA adapter into its base model (W + s*B*A) and writes a plain "
                 "Hugging Face model directory that transformers loads without peft.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  namespace fs = std::filesystem;
  base = nn::resolve_pretrained(base);
  const std::string config_path = (fs::path(base) / "config.json").string();
  std::ifstream in(config_path);
  HF_CHECK_INPUT(in.good(), config_path, ": cannot open (--base must be a model directory)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string type = nn::model_type_of(ss.str(), config_path);
  auto model = nn::load_model(ss.str(), config_path, 0, type, nn::peft_task(adapter, type), base);
  model->eval();
  const nn::LoraOptions o = nn::apply_peft_adapter(*model, adapter);
  const std::string tokenizer = (fs::path(base) / "tokenizer.json").string();
  train::write_hf_model(output, model->config_json(), nn::merged_state(*model),
                        fs::is_regular_file(tokenizer) ? tokenizer : std::string());
  std::cout << "merged " << nn::lora_modules(*model).size() << " LoRA layers (r " << o.r
            << ", scale " << o.scaling() << ") into " << model->architecture() << ": " << output
            << "\n";
  return 0;
}

}  // namespace hfrun::cli
