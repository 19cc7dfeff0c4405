// The umbrella header for programs that embed hfrun (link hfrun::hfrun).
#pragma once

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "common/error.h"
#include "common/version.h"
#include "data/tokenizer/tokenizer.h"
#include "models/generate.h"
#include "models/gpt2.h"
#include "optim/optimizer.h"
#include "tensor/ops.h"
#include "tensor/profiler.h"
#include "tensor/tensor.h"
#include "tensor/threads.h"
#include "train/accelerator.h"
#include "train/trainer.h"
