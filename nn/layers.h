// The building blocks of every family, with PyTorch's parameter names (weight, bias):
//   Linear      y = x W^T + b, weight [out, in] (nn.Linear), or GPT-2's Conv1D y = x W + b with
//               weight [in, out] (WeightLayout::kInOut)
//   Embedding   rows of weight [V, C]; attend() is the tied output projection x weight^T
//   LayerNorm   weight, bias over the last dim
//   RMSNorm     weight over the last dim (Llama's x / rms(x) * weight)
//   ModuleList  numbered children ("layers.0", "layers.1", ...)
//
// Linear and Embedding are where tensor parallelism happens: a plan applied by
// distributed/parallel/ keeps each rank's part of their parameters and switches their forward
// to the column-, row- or vocabulary-parallel form (nn/tensor_parallel.h). A family's forward
// is the same with and without it; it reads head counts from tensor shapes, not the config.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "nn/module.h"
#include "tensor/random.h"

namespace hfrun::nn {

using WeightLayout = hfrun::WeightLayout;  // autograd/functions.h: what linear() takes

// A layer that tensor parallelism can split: remembers its style and group once parallelised.
class ParallelLayer : public Module {
 public:
  // Keeps rank group->rank()'s part of the parameters and switches forward to `style`.
  // Throws an invalid-input error (naming `path`) when a dimension cannot be split.
  virtual void parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                           const std::string& path) = 0;
  // How `style` splits this layer's parameter `param` ("weight", "bias"), as full tensors of
  // their current shapes (not split: dim < 0).
  virtual TensorParallelSplit split_for(ParallelStyle style, int groups,
                                        const std::string& param) const = 0;
  bool is_parallel() const { return group_ != nullptr; }
  ParallelStyle parallel_style() const { return style_; }
  TensorParallelGroup* parallel_group() const { return group_; }
  // kVocab: the first vocabulary id of this rank's rows (0 when not split).
  int64_t vocab_begin() const { return vocab_begin_; }

  // An output layer's loss without its logits: the mean cross-entropy of the f32 logits it
  // makes of x [..., in] against targets [...] (-100 not counted), `bias` [V] added to them (a
  // tied decoder's own bias, BERT's), through autograd::linear_cross_entropy: for a whole layer
  // (not tensor-parallel, no adapter, nn.Linear's layout) whose bf16 or f32 GEMMs run on a
  // backend with the blocked kernels (else it throws). fuses_loss(rows) says whether a model
  // should take it for x's rows: where it can and the backend prefers it for its GEMMs' dtype
  // and that many logits (autograd's fuses_linear_cross_entropy).
  virtual bool fuses_loss(int64_t /*rows*/) const { return false; }
  virtual Tensor fused_loss(const Tensor& x, const Tensor& targets,
                            const Tensor& bias = Tensor()) const;

 protected:
  ParallelStyle style_ = ParallelStyle::kColwise;
  TensorParallelGroup* group_ = nullptr;
  int64_t vocab_begin_ = 0;
};

class Linear : public ParallelLayer {
 public:
  // `weight` [out, in] for kOutIn or [in, out] for kInOut; `bias` [out] or undefined (none).
  Linear(Tensor weight, Tensor bias, WeightLayout layout = WeightLayout::kOutIn);

  // x [..., in] -> [..., out] (this rank's slice of out under colwise/vocab). Under mixed
  // precision the GEMM takes compute_dtype() copies and accumulates in f32; the result is
  // `out_dtype` (default: x's dtype), rounded once.
  Tensor forward(const Tensor& x, std::optional<DType> out_dtype = std::nullopt);
  // gelu_tanh(forward(x)): one GEMM with a GELU epilogue where the device has it (GPT-2's
  // c_fc + gelu_new).
  Tensor forward_gelu(const Tensor& x, std::optional<DType> out_dtype = std::nullopt);

  void parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                   const std::string& path) override;
  TensorParallelSplit split_for(ParallelStyle style, int groups,
                                const std::string& param) const override;

  bool fuses_loss(int64_t rows) const override;
  Tensor fused_loss(const Tensor& x, const Tensor& targets,
                    const Tensor& bias = Tensor()) const override;

  const Parameter& weight() const { return weight_; }
  const Parameter& bias() const { return bias_; }  // undefined without bias
  WeightLayout layout() const { return layout_; }
  int64_t in_features() const;
  int64_t out_features() const;  // this rank's, under tensor parallelism

  // LoRA (PEFT's semantics): forward becomes base(x) + scale * lora_B(lora_A(dropout(x))) with
  // children "lora_A" (weight [r, in]) and "lora_B" (weight [out, r]), both nn.Linear layout
  // whatever this layer's (GPT-2's Conv1D is PEFT's fan_in_fan_out). Dropout draws from
  // `dropout_gen` in training. Before tensor parallelism (nn/lora.h applies it), which then
  // splits the adapter with the layer: column-parallel splits B's outputs, row-parallel A's
  // inputs, and the other factor stays whole with its gradient summed over the group.
  void add_lora(Tensor a, Tensor b, double scale, double dropout, Generator* dropout_gen);
  Linear* lora_A() const { return lora_a_; }
  Linear* lora_B() const { return lora_b_; }
  double lora_scale() const { return lora_scale_; }

 private:
  // y (the base layer's output, in dtype) + the adapter's term s * B(A(dropout(x))) (this
  // rank's share under tensor parallelism), added into y's memory by B's GEMM where nothing
  // else holds it (linear_add).
  Tensor lora_term(const Tensor& x, DType dtype, Tensor y) const;

  // linear() of x with `weight` (this layer's, or a view of it through a tensor-parallel
  // function) in this layer's layout and its compute dtype.
  Tensor project(const Tensor& x, const Tensor& weight, const Tensor& bias, DType out) const;
  Tensor prepare_input(const Tensor& x) const;

  Parameter weight_, bias_;
  WeightLayout layout_;
  Linear* lora_a_ = nullptr;
  Linear* lora_b_ = nullptr;
  double lora_scale_ = 0, lora_dropout_ = 0;
  Generator* lora_gen_ = nullptr;
};

class Embedding : public ParallelLayer {
 public:
  explicit Embedding(Tensor weight);  // [V, C]
  // ids [...] -> [..., C].
  Tensor forward(const Tensor& ids);
  // x [..., C] -> logits [..., V] (this rank's vocabulary slice under kVocab): the output
  // projection tied to this embedding.
  Tensor attend(const Tensor& x);
  void parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                   const std::string& path) override;
  TensorParallelSplit split_for(ParallelStyle style, int groups,
                                const std::string& param) const override;
  // attend()'s loss (ParallelLayer::fused_loss).
  bool fuses_loss(int64_t rows) const override;
  Tensor fused_loss(const Tensor& x, const Tensor& targets,
                    const Tensor& bias = Tensor()) const override;
  const Parameter& weight() const { return weight_; }
  int64_t num_embeddings() const;  // the whole vocabulary

 private:
  Parameter weight_;
  int64_t num_embeddings_;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps, bool bias = true);
  Tensor forward(const Tensor& x) const;
  const Parameter& weight() const { return weight_; }

 private:
  Parameter weight_, bias_;
  double eps_;
};

class RMSNorm : public ParallelLayer {
 public:
  RMSNorm(int64_t dim, double eps);
  Tensor forward(const Tensor& x) const;
  // kReplicatedSumGrad only.
  void parallelize(ParallelStyle style, int groups, TensorParallelGroup* group,
                   const std::string& path) override;
  TensorParallelSplit split_for(ParallelStyle, int, const std::string&) const override {
    return {};
  }
  const Parameter& weight() const { return weight_; }

 private:
  Parameter weight_;
  double eps_;
};

// Children named "0", "1", ... (HF's nn.ModuleList).
template <typename M>
class ModuleList : public Module {
 public:
  M& append(std::unique_ptr<M> module) {
    M& ref = register_module(std::to_string(items_.size()), std::move(module));
    items_.push_back(&ref);
    return ref;
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }
  const std::vector<M*>& items() const { return items_; }

 private:
  std::vector<M*> items_;
};

}  // namespace hfrun::nn
