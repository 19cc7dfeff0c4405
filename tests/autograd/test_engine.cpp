// The autograd engine: accumulation, graph lifetime, no-grad, grad-ready hooks.
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "tensor/allocator.h"
#include "tensor/profiler.h"
#include "test_util.h"

namespace hfrun {
namespace {

using testing::tensor_near;

Tensor leaf(const std::vector<float>& v, const Shape& s) {
  Tensor t = ops::from_vector(v, s);
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, ChainRuleOnAScalarLoss) {
  // L = sum((a * b + a)^2); dL/da = 2(ab + a)(b + 1), dL/db = 2(ab + a) a.
  Tensor a = leaf({1, 2, 3}, {3}), b = leaf({4, 5, 6}, {3});
  Tensor y = add(mul(a, b), a);
  Tensor loss = sum(mul(y, y));
  autograd::backward(loss);
  EXPECT_TRUE(tensor_near(a.grad(), {2 * 5 * 5, 2 * 12 * 6, 2 * 21 * 7}));
  EXPECT_TRUE(tensor_near(b.grad(), {2 * 5 * 1, 2 * 12 * 2, 2 * 21 * 3}));
  EXPECT_TRUE(a.is_leaf());
  EXPECT_FALSE(loss.is_leaf());
  EXPECT_EQ(loss.grad_fn()->name(), std::string("sum"));
}

TEST(Autograd, GradientsAccumulateAcrossBackwards) {
  Tensor w = leaf({1, 2}, {2});
  for (int i = 0; i < 3; ++i) autograd::backward(sum(mul_scalar(w, 2.0)));
  EXPECT_TRUE(tensor_near(w.grad(), {6, 6}));
  w.set_grad(Tensor());
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, SharedGradientIsNotAliasedBetweenLeaves) {
  // add passes the same gradient tensor to both inputs; each leaf must own a copy.
  Tensor a = leaf({1, 1}, {2}), b = leaf({1, 1}, {2});
  autograd::backward(sum(add(a, b)));
  EXPECT_FALSE(a.grad().shares_storage_with(b.grad()));
  autograd::backward(sum(mul_scalar(a, 3.0)));
  EXPECT_TRUE(tensor_near(a.grad(), {4, 4}));
  EXPECT_TRUE(tensor_near(b.grad(), {1, 1}));
}

TEST(Autograd, DiamondGraphSumsBothPaths) {
  // y = x*x + exp(x): both branches reach x.
  Tensor x = leaf({0.5f, -1.0f}, {2});
  autograd::backward(sum(add(mul(x, x), exp(x))));
  EXPECT_TRUE(tensor_near(x.grad(), {1.0f + std::exp(0.5f), -2.0f + std::exp(-1.0f)}, 1e-6));
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = leaf({1, 2}, {2});
  {
    autograd::NoGradGuard guard;
    Tensor y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  EXPECT_TRUE(mul(x, x).requires_grad());
  Tensor c = ops::ones({2});
  EXPECT_FALSE(add(c, c).requires_grad());
  EXPECT_THROW(autograd::backward(sum(c)), Error);
}

TEST(Autograd, GraphIsFreedAfterBackward) {
  Tensor x = leaf({1, 2, 3}, {3});
  std::weak_ptr<Storage> saved;
  Tensor loss;
  {
    Tensor t = tanh(x);  // tanh saves its output for the backward
    saved = t.storage();
    loss = sum(t);
  }
  EXPECT_FALSE(saved.expired());  // held by the graph
  autograd::backward(loss);
  EXPECT_TRUE(saved.expired());                   // released by backward
  EXPECT_THROW(autograd::backward(loss), Error);  // second backward through a freed graph
}

TEST(Autograd, GradReadyHookFiresOncePerBackwardWithFinalGradient) {
  Tensor w = leaf({1, 2}, {2});
  std::vector<std::vector<float>> seen;
  autograd::register_grad_ready_hook(w, [&](Tensor& t) { seen.push_back(t.grad().to_vector()); });
  // w is used twice; the hook must see the sum of both paths, once.
  autograd::backward(sum(add(mul_scalar(w, 2.0), mul(w, w))));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<float>{4, 6}));
  Tensor nonleaf = mul(w, w);
  EXPECT_THROW(autograd::register_grad_ready_hook(nonleaf, [](Tensor&) {}), Error);
}

TEST(Autograd, GradReadyHookFiresEvenWhenNoGradientReachesTheLeaf) {
  // A backward that returns no gradient for an input: the leaf's gradient is final (none), and
  // a hook waiting on it (a DDP bucket) must still be told.
  Tensor w = leaf({1, 2}, {2});
  int fired = 0;
  autograd::register_grad_ready_hook(w, [&](Tensor&) { ++fired; });
  Tensor y = autograd::record("no_grad_to_input", {w}, ops::mul_scalar(w, 2.0),
                              [](const Tensor&) -> std::vector<Tensor> { return {Tensor()}; });
  autograd::backward(sum(y));
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, HooksFireInReverseOrderOfUse) {
  // Later layers' gradients are final first: what DDP bucketing relies on.
  Tensor w1 = leaf({1}, {1}), w2 = leaf({1}, {1}), w3 = leaf({1}, {1});
  std::vector<int> order;
  autograd::register_grad_ready_hook(w1, [&](Tensor&) { order.push_back(1); });
  autograd::register_grad_ready_hook(w2, [&](Tensor&) { order.push_back(2); });
  autograd::register_grad_ready_hook(w3, [&](Tensor&) { order.push_back(3); });
  Tensor x = ops::ones({1});
  Tensor h = tanh(mul(x, w1));
  h = tanh(mul(h, w2));
  h = tanh(mul(h, w3));
  autograd::backward(sum(h));
  EXPECT_EQ(order, (std::vector<int>{3, 2, 1}));
}

// A weight tied between an embedding and an output projection (GPT-2's wte and lm_head): the
// embedding's backward adds its rows into the projection's pending gradient in place (a
// gradient sink) instead of a dense gradient summed with it. The result has the same bits as
// the two gradients computed apart and added, and the in-place path is the one taken.
// A lookup of table w and a projection onto its transpose (a tied head), squared and summed.
Tensor tied_lookup_loss(const Tensor& w, const Tensor& ids) {
  Tensor h = embedding(w, ids);
  Tensor logits = linear(mul_scalar(h, 1.5), transpose(w, 0, 1));
  return sum(mul(logits, logits));
}

TEST(Autograd, TiedEmbeddingGradientAddsIntoThePendingOne) {
  const int64_t V = 50, C = 16, n = 12;
  Tensor w = ops::mul_scalar(testing::randn({V, C}, 3), 0.1);
  w.set_requires_grad(true);
  const Tensor ids = ops::from_ints({3, 7, 3, 0, 49, 12, 3, 8, 8, 21, 30, 7}, {n});
  auto run = [&] { return tied_lookup_loss(w, ids); };
  profiler::reset();
  profiler::set_enabled(true);
  autograd::backward(run());
  profiler::set_enabled(false);
  const auto stats = profiler::snapshot();
  EXPECT_EQ(stats.count("op:embedding_backward_add"), 1u) << "the sink was not taken";
  EXPECT_EQ(stats.count("op:embedding_backward"), 0u);
  const std::vector<float> got = w.grad().to_vector();
  // Apart: the projection's gradient (through a detached copy of the table) plus the dense
  // embedding gradient of the same upstream gradient.
  Tensor table = ops::clone(w.detach());
  table.set_requires_grad(true);
  Tensor h = ops::embedding(w.detach(), ids);
  h.set_requires_grad(true);
  Tensor logits = linear(mul_scalar(h, 1.5), transpose(table, 0, 1));
  autograd::backward(sum(mul(logits, logits)));
  const Tensor want = ops::add(table.grad(), ops::embedding_backward(h.grad(), ids, V));
  EXPECT_EQ(got, want.to_vector());
}

// A table with a row-gradient handler (what DDP installs): the lookup hands its rows and ids to
// the handler and keeps no edge to the table, so the tied projection's gradient is final (its
// grad-ready hook runs) before the lookup's backward; the projection's gradient plus the rows
// added by the handler equal the plain backward's gradient.
TEST(Autograd, RowGradientHandlerTakesTheLookupsRowsAfterTheDenseGradientIsFinal) {
  const int64_t V = 50, C = 16, n = 12;
  Tensor w = ops::mul_scalar(testing::randn({V, C}, 3), 0.1);
  w.set_requires_grad(true);
  const Tensor ids = ops::from_ints({3, 7, 3, 0, 49, 12, 3, 8, 8, 21, 30, 7}, {3, 4});
  auto run = [&] { return tied_lookup_loss(w, ids); };
  autograd::backward(run());
  const std::vector<float> want = w.grad().to_vector();
  w.set_grad(Tensor());

  std::vector<std::string> events;
  Tensor rows, row_ids;
  autograd::register_grad_ready_hook(w, [&](Tensor&) { events.push_back("dense final"); });
  autograd::set_row_gradient_handler(w, [&](const Tensor& dy, const Tensor& i) {
    events.push_back("rows");
    rows = ops::clone(dy);
    row_ids = ops::clone(i);
  });
  Tensor loss = run();
  autograd::backward(loss);
  EXPECT_EQ(events, (std::vector<std::string>{"dense final", "rows"}));
  ASSERT_EQ(rows.sizes(), (Shape{n, C}));
  ASSERT_EQ(row_ids.sizes(), (Shape{n}));
  EXPECT_EQ(row_ids.to_int_vector(), ops::reshape(ids, {n}).to_int_vector());
  Tensor g = w.grad();
  ops::embedding_backward_add_(g, rows, row_ids);
  const std::vector<float> got = g.to_vector();
  for (size_t k = 0; k < want.size(); ++k) ASSERT_NEAR(got[k], want[k], 1e-5) << k;

  // Only looked up: the engine never reaches the table (no hook), the handler still gets rows.
  events.clear();
  autograd::backward(sum(embedding(w, ids)));
  EXPECT_EQ(events, (std::vector<std::string>{"rows"}));
  // Removed: the lookup has its edge again.
  autograd::set_row_gradient_handler(w, nullptr);
  events.clear();
  w.set_grad(Tensor());
  autograd::backward(sum(embedding(w, ids)));
  EXPECT_EQ(events, (std::vector<std::string>{"dense final"}));
  EXPECT_TRUE(w.grad().defined());
}

// A linear layer's f32 weight whose gradient buffer exists (a second backward, or a flattened
// model's) and that only this layer reaches: the weight-gradient GEMM adds into the buffer
// (matmul_add), and the sum equals the gradient added by AccumulateGrad; its grad-ready hook
// still fires once, with the final gradient.
// The engine hands each node its gradient; a backward that takes it by value frees it once
// read. Under mixed precision linear's f32 output gradient (lm_head's logits: the largest tensor
// of a step) is freed after its bf16 cast, before the f32 weight gradient is allocated.
TEST(Autograd, LinearFreesItsOutputGradientBeforeTheWeightGradient) {
  constexpr int64_t kRows = 64, kIn = 256, kOut = 4096;
  const Tensor w = testing::randn({kIn, kOut}, 7, /*requires_grad=*/true);
  const Tensor x = testing::randn({kRows, kIn}, 8);
  Tensor y = linear(x, w, Tensor(), DType::kBF16);
  ASSERT_EQ(y.dtype(), DType::kF32);
  // A loss whose backward makes a fresh [rows, out] f32 gradient, held by nothing but the engine.
  const Tensor loss = autograd::record("test_loss", {y}, ops::zeros({}, DType::kF32, y.device()),
                                       [](const Tensor&) -> std::vector<Tensor> {
                                         return {ops::ones({kRows, kOut}, DType::kF32)};
                                       });
  y = Tensor();
  cpu_allocator().reset_peak();  // this backward's peak, not an earlier test's
  const AllocatorStats before = cpu_allocator().stats();
  const size_t g_out = kRows * kOut * 4, g_bf16 = kRows * kOut * 2, grad_w = kIn * kOut * 4;
  autograd::backward(loss);
  const AllocatorStats after = cpu_allocator().stats();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), DType::kF32);
  // Kept together at most: the bf16 copy of the output gradient and the f32 weight gradient
  // (the cast itself holds g_out and its copy, less than that). Holding g_out too costs g_out.
  EXPECT_LT(after.peak_allocated_bytes - before.allocated_bytes, g_bf16 + grad_w + g_out / 2);
  // The gradient is x^T @ ones computed from bf16 operands: column sums of bf16(x).
  const Tensor xb = ops::to_dtype(ops::to_dtype(x, DType::kBF16), DType::kF32);
  const std::vector<float> xv = xb.to_vector(), gw = w.grad().to_vector();
  for (int64_t i = 0; i < kIn; i += 37) {
    double col = 0;
    for (int64_t r = 0; r < kRows; ++r) col += xv[r * kIn + i];
    for (int64_t j = 0; j < kOut; j += 511)
      EXPECT_NEAR(gw[i * kOut + j], col, 1e-4 * (1 + std::fabs(col)));
  }
}

// Within a WeightCastScope each weight's compute-dtype copy is made once and reused (the
// micro-steps of one optimizer step); the results and gradients are the same bits as without.
TEST(Autograd, WeightCastScopeCastsEachWeightOnce) {
  const Tensor w = testing::randn({6, 5}, 21, /*requires_grad=*/true);
  const Tensor table = testing::randn({7, 6}, 22, /*requires_grad=*/true);
  const Tensor x = testing::randn({3, 6}, 23), x2 = testing::randn({3, 6}, 24);
  auto run = [&](const Tensor& in) {
    // w, and the table read transposed (a tied head): two weights, the second a fresh view
    // each time.
    Tensor y = linear(in, w, Tensor(), DType::kBF16);
    Tensor logits = linear(in, transpose(table, 0, 1), Tensor(), DType::kBF16);
    Tensor loss = add(sum(mul(y, y)), sum(logits));
    autograd::backward(loss);
    return loss.item();
  };
  const double plain1 = run(x), plain2 = run(x2);
  const std::vector<float> plain_w = w.grad().to_vector(), plain_t = table.grad().to_vector();
  Tensor gw = w.grad(), gt = table.grad();
  ops::fill_(gw, 0);
  ops::fill_(gt, 0);
  {
    WeightCastScope scope;
    EXPECT_EQ(run(x), plain1);
    EXPECT_EQ(scope.casts(), 2);
    EXPECT_EQ(run(x2), plain2);
    EXPECT_EQ(scope.casts(), 2) << "the second micro-step cast the weights again";
    EXPECT_TRUE(weight_in_dtype(w, DType::kF32).is_same(w));  // already in that dtype
    EXPECT_THROW(WeightCastScope nested, Error);
  }
  EXPECT_EQ(w.grad().to_vector(), plain_w);
  EXPECT_EQ(table.grad().to_vector(), plain_t);
  WeightCastScope next;  // a new scope (after an update) casts anew
  run(x);
  EXPECT_EQ(next.casts(), 2);
}

// A scope started with carried copies returns them, casting nothing; release() hands back the
// carried and the new ones and ends the reuse (a later weight_in_dtype casts afresh).
TEST(Autograd, WeightCastScopeStartsWithCarriedCopies) {
  const Tensor w = testing::randn({6, 5}, 31, /*requires_grad=*/true);
  const Tensor v = testing::randn({5, 6}, 32, /*requires_grad=*/true);
  const Tensor wt = ops::to_dtype(transpose(w, 0, 1), DType::kBF16);
  std::vector<WeightCopy> carried = {{transpose(w, 0, 1), wt}};
  std::vector<WeightCopy> out;
  {
    WeightCastScope scope(std::move(carried));
    EXPECT_TRUE(weight_in_dtype(transpose(w, 0, 1), DType::kBF16).is_same(wt));
    EXPECT_EQ(scope.casts(), 0);
    const Tensor vc = weight_in_dtype(v, DType::kBF16);
    EXPECT_EQ(scope.casts(), 1);
    EXPECT_TRUE(weight_in_dtype(v, DType::kBF16).is_same(vc));
    // w itself is another view (other strides) than the carried transpose: cast anew.
    EXPECT_FALSE(weight_in_dtype(w, DType::kBF16).is_same(wt));
    EXPECT_EQ(scope.casts(), 2);
    out = scope.release();
    EXPECT_FALSE(weight_in_dtype(v, DType::kBF16).is_same(vc)) << "reused after release()";
    WeightCastScope next;  // the released scope no longer holds the thread's slot
  }
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(out[0].copy.is_same(wt));
  EXPECT_EQ(out[1].source.raw_data(), v.raw_data());
}

// Linears reading one input inside its InputCastScope share one bf16 copy of it (the same
// values and gradients as casting it each time); another tensor, a view of it, or the input
// outside the scope is cast anew.
TEST(Autograd, InputCastScopeSharesOneCopyOfItsInput) {
  Tensor x = testing::randn({4, 6}, 41, /*requires_grad=*/true);
  Tensor w1 = testing::randn({5, 6}, 42, /*requires_grad=*/true);
  Tensor w2 = testing::randn({3, 6}, 43, /*requires_grad=*/true);
  const auto run = [&] {
    const Tensor h = mul_scalar(x, 2.0);
    Tensor y = add(sum(linear(h, w1, Tensor(), DType::kBF16, std::nullopt, WeightLayout::kOutIn)),
                   sum(linear(h, w2, Tensor(), DType::kBF16, std::nullopt, WeightLayout::kOutIn)));
    autograd::backward(y);
    return std::vector<std::vector<float>>{y.to_vector(), x.grad().to_vector(),
                                           w1.grad().to_vector(), w2.grad().to_vector()};
  };
  const auto plain = run();
  for (Tensor* t : {&x, &w1, &w2}) t->set_grad(Tensor());
  const Tensor h = mul_scalar(x, 2.0);
  {
    const InputCastScope scope(h);
    const Tensor c = input_in_dtype(h, DType::kBF16);
    EXPECT_EQ(c.dtype(), DType::kBF16);
    EXPECT_TRUE(input_in_dtype(h, DType::kBF16).is_same(c));
    EXPECT_TRUE(input_in_dtype(h, DType::kF32).is_same(h));
    EXPECT_FALSE(input_in_dtype(ops::reshape(h, {4, 6}), DType::kBF16).is_same(c));
    EXPECT_FALSE(input_in_dtype(x, DType::kBF16).is_same(c));
    {
      const InputCastScope inner(x);  // scopes nest: the outer one's input is still shared
      EXPECT_TRUE(input_in_dtype(h, DType::kBF16).is_same(c));
    }
  }
  EXPECT_FALSE(input_in_dtype(h, DType::kBF16).is_same(input_in_dtype(h, DType::kBF16)));
  {
    const Tensor hs = mul_scalar(x, 2.0);
    const InputCastScope scope(hs);
    Tensor y = add(sum(linear(hs, w1, Tensor(), DType::kBF16, std::nullopt, WeightLayout::kOutIn)),
                   sum(linear(hs, w2, Tensor(), DType::kBF16, std::nullopt, WeightLayout::kOutIn)));
    autograd::backward(y);
    EXPECT_EQ(y.to_vector(), plain[0]);
  }
  EXPECT_EQ(x.grad().to_vector(), plain[1]);
  EXPECT_EQ(w1.grad().to_vector(), plain[2]);
  EXPECT_EQ(w2.grad().to_vector(), plain[3]);
}

TEST(Autograd, LinearWeightGradientIsAddedIntoItsBufferByTheGemm) {
  Tensor w = testing::randn({6, 4}, 4, /*requires_grad=*/true);
  const Tensor x = testing::randn({5, 6}, 5);
  int fired = 0;
  std::vector<float> seen;
  autograd::register_grad_ready_hook(w, [&](Tensor& leaf) {
    ++fired;
    seen = leaf.grad().to_vector();
  });
  auto loss = [&] { return sum(mul(linear(x, w), linear(x, w))); };
  autograd::backward(loss());  // no buffer yet: the gradient is returned and taken
  const Tensor first = ops::clone(w.grad());
  // linear used twice: two producers, so no sink; the buffer gets the summed gradient.
  autograd::backward(loss());
  const Tensor twice = ops::clone(w.grad());
  auto single = [&] { return sum(mul(linear(x, w), ops::clone(linear(x, w).detach()))); };
  profiler::reset();
  profiler::set_enabled(true);
  autograd::backward(single());
  profiler::set_enabled(false);
  const auto stats = profiler::snapshot();
  EXPECT_EQ(stats.count("op:matmul_add"), 1u) << "the weight gradient did not go to its buffer";
  EXPECT_EQ(fired, 3);
  EXPECT_EQ(seen, w.grad().to_vector());
  // The last backward's own gradient: half of one backward of loss() (y * const, not y * y).
  const std::vector<float> got = w.grad().to_vector(), a = twice.to_vector(), g = first.to_vector();
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], a[i] + g[i] / 2, 1e-5 * (1 + std::fabs(a[i])));
  }
}

// Tensor::zero_grad_lazily: each leaf's gradient buffer is filled with NaN and zeroed lazily,
// then backward runs (`backwards` times); against the same leaves with buffers filled with
// zeros, every gradient comes out bit for bit equal, in its original buffer. A NaN that any
// path added to, or that a reader saw, would show.
void expect_lazy_zero_equals_fill(const std::vector<Tensor>& leaves,
                                  const std::function<Tensor()>& loss, int backwards = 1,
                                  const char* sink_op = nullptr) {
  std::vector<Tensor> buffers;
  std::vector<std::vector<float>> want;
  for (const Tensor& w : leaves) buffers.push_back(ops::zeros(w.sizes(), w.dtype()));
  for (size_t i = 0; i < leaves.size(); ++i) Tensor(leaves[i]).set_grad(buffers[i]);
  for (int b = 0; b < backwards; ++b) autograd::backward(loss());
  for (const Tensor& w : leaves) want.push_back(w.grad().to_vector());

  for (size_t i = 0; i < leaves.size(); ++i) {
    Tensor w = leaves[i];
    ops::fill_(buffers[i], std::nan(""));
    w.set_grad(buffers[i]);
    w.zero_grad_lazily();
  }
  profiler::reset();
  profiler::set_enabled(true);
  for (int b = 0; b < backwards; ++b) autograd::backward(loss());
  profiler::set_enabled(false);
  if (sink_op != nullptr) {
    EXPECT_EQ(profiler::snapshot().count(sink_op), 0u)
        << sink_op << " ran: a lazily zeroed buffer was added or copied into";
  }
  for (size_t i = 0; i < leaves.size(); ++i) {
    const Tensor g = leaves[i].grad();
    EXPECT_TRUE(g.is_same(buffers[i])) << "leaf " << i << ": the gradient left its buffer";
    EXPECT_EQ(g.to_vector(), want[i]) << "leaf " << i;
  }
}

TEST(Autograd, GradientZeroedLazilyIsWrittenOverOrFilledWhenRead) {
  const Tensor x = testing::randn({5, 6}, 5);
  Tensor w = testing::randn({6, 4}, 4, /*requires_grad=*/true);
  Tensor b = testing::randn({4}, 6, /*requires_grad=*/true);
  Tensor unused = testing::randn({3}, 7, /*requires_grad=*/true);
  // The weight's GEMM writes its buffer (the sink) instead of adding to it; the bias goes
  // through AccumulateGrad (a copy, not an add); `unused` is never reached: grad() fills it.
  auto single = [&] { return sum(mul(linear(x, w, b), ops::clone(linear(x, w).detach()))); };
  expect_lazy_zero_equals_fill({w, b, unused}, single, 1, "op:matmul_add");
  // Mixed precision: the bf16 GEMM writes its f32 accumulator over the buffer.
  auto bf16 = [&] { return sum(mul(linear(x, w, b, DType::kBF16), linear(x, w).detach())); };
  expect_lazy_zero_equals_fill({w, b}, bf16, 1, "op:matmul_add");
  // Two producers of w (no sink) and two backwards in one window: the first write replaces the
  // stale values, the rest add.
  auto twice = [&] { return sum(mul(linear(x, w, b), linear(x, w, b))); };
  expect_lazy_zero_equals_fill({w, b}, twice, 2);
  expect_lazy_zero_equals_fill({w, b}, single, 3);

  // A tied table: the projection's GEMM writes it, then the lookup's rows are added; a table
  // only looked up is filled before its rows go in.
  const int64_t V = 50, C = 16;
  Tensor table = ops::mul_scalar(testing::randn({V, C}, 3), 0.1);
  table.set_requires_grad(true);
  const Tensor ids = ops::from_ints({3, 7, 3, 0, 49, 12, 3, 8, 8, 21, 30, 7}, {12});
  expect_lazy_zero_equals_fill(
      {table}, [&] { return tied_lookup_loss(table, ids); }, 1, "op:matmul_add");
  expect_lazy_zero_equals_fill(
      {table}, [&] { return tied_lookup_loss(table, ids); }, 2);
  // The same head over the table in nn.Linear's layout (no transpose node): the projection's
  // GEMM writes the lazily zeroed buffer itself, which then stands for the pending gradient (the
  // lookup's rows go into it), so the [V, C] gradient is neither a tensor of its own nor copied.
  const auto tied_out_in = [&] {
    Tensor h = embedding(table, ids);
    Tensor logits = linear(mul_scalar(h, 1.5), table, Tensor(), std::nullopt, std::nullopt,
                           WeightLayout::kOutIn);
    return sum(mul(logits, logits));
  };
  expect_lazy_zero_equals_fill({table}, tied_out_in, 1, "op:copy");
  EXPECT_EQ(profiler::snapshot().count("op:embedding_backward_add"), 1u);
  EXPECT_EQ(profiler::snapshot().count("op:embedding_backward"), 0u);
  expect_lazy_zero_equals_fill({table}, tied_out_in, 3);
  Tensor proj = testing::randn({C, 5}, 8, /*requires_grad=*/true);
  expect_lazy_zero_equals_fill(
      {table, proj}, [&] { return sum(mul_scalar(linear(embedding(table, ids), proj), 2.0)); });
}

// Slices of one tensor (q, k and v cut from one projection): the first slice's backward leaves
// a zero-padded gradient pending, the others add into their slices of it. The result is the
// sum of each slice's gradient placed in its slice: for a leaf and for an intermediate, f32 and
// bf16, overlapping slices and a gap nothing reads (zero), and a buffer zeroed lazily.
TEST(Autograd, SlicesOfOneTensorAddIntoOnePendingGradient) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor a = ops::to_dtype(testing::randn({2, 3, 4}, 1), dt);
    const Tensor b = ops::to_dtype(testing::randn({2, 3, 6}, 2), dt);
    const Tensor c = ops::to_dtype(testing::randn({2, 3, 3}, 3), dt);
    // Slices [0, 4), [2, 8) (overlapping the first) and [11, 14) of 15: 8..10 is read by none.
    const auto loss = [&](const Tensor& x) {
      return add(add(sum(to_dtype(mul(narrow(x, 2, 0, 4), a), DType::kF32)),
                     sum(to_dtype(mul(narrow(x, 2, 2, 6), b), DType::kF32))),
                 sum(to_dtype(mul(narrow(x, -1, 11, 3), c), DType::kF32)));
    };
    const std::vector<float> av = a.to_vector(), bv = b.to_vector(), cv = c.to_vector();
    std::vector<float> want(2 * 3 * 15, 0.0f);
    for (int64_t r = 0; r < 6; ++r) {
      for (int64_t j = 0; j < 4; ++j) want[r * 15 + j] += av[r * 4 + j];
      for (int64_t j = 0; j < 6; ++j) {
        const float sum_ab = want[r * 15 + 2 + j] + bv[r * 6 + j];
        // Overlap in bf16: the two bf16 gradients are summed in bf16 (rounded once).
        want[r * 15 + 2 + j] =
            dt == DType::kBF16 ? ops::to_dtype(ops::from_vector({sum_ab}, {1}), dt).to_vector()[0]
                               : sum_ab;
      }
      for (int64_t j = 0; j < 3; ++j) want[r * 15 + 11 + j] += cv[r * 3 + j];
    }
    Tensor x = ops::to_dtype(testing::randn({2, 3, 15}, 4), dt);
    x.set_requires_grad(true);
    autograd::backward(loss(x));
    EXPECT_EQ(x.grad().to_vector(), want) << "leaf";
    // Zeroed lazily: its stale values are not added to.
    x.set_grad(ops::full({2, 3, 15}, 5.0, dt));
    x.zero_grad_lazily();
    autograd::backward(loss(x));
    EXPECT_EQ(x.grad().to_vector(), want) << "leaf zeroed lazily";
    // An intermediate (the engine's pending gradient is the sink): its producer sees the sum.
    Tensor w = ops::to_dtype(testing::randn({2, 3, 15}, 5), dt);
    w.set_requires_grad(true);
    autograd::backward(loss(mul_scalar(w, 1.0)));
    EXPECT_EQ(w.grad().to_vector(), want) << "intermediate";
  }
}

TEST(Autograd, NonScalarRootNeedsExplicitGradient) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = mul_scalar(x, 3.0);
  EXPECT_THROW(autograd::backward(y), Error);
  autograd::backward(y, ops::from_vector({1, 10}, {2}));
  EXPECT_TRUE(tensor_near(x.grad(), {3, 30}));
}

TEST(Autograd, DetachStopsGradientAndLeavesMustBeFloating) {
  Tensor x = leaf({2}, {1});
  Tensor y = mul(x.detach(), x);
  autograd::backward(sum(y));
  EXPECT_TRUE(tensor_near(x.grad(), {2}));
  Tensor ids = ops::arange(3);
  EXPECT_THROW(ids.set_requires_grad(true), Error);
  EXPECT_THROW(y.set_requires_grad(false), Error);  // not a leaf
}

TEST(Autograd, GradientOfMixedPrecisionInputComesBackInItsDtype) {
  Tensor w = ops::to_dtype(ops::from_vector({1, 2}, {2}), DType::kBF16);
  w.set_requires_grad(true);
  Tensor y = sum(mul(to_dtype(w, DType::kF32), ops::from_vector({3, 4}, {2})));
  autograd::backward(y);
  EXPECT_EQ(w.grad().dtype(), DType::kBF16);
  EXPECT_TRUE(tensor_near(w.grad(), {3, 4}));
}

}  // namespace
}  // namespace hfrun
