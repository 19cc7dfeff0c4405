// The CUDA device itself: host <-> device round trips for every dtype (contiguous, strided,
// broadcast, with casts), the caching allocator (no cudaMalloc in steady state, stats),
// Philox fills bitwise equal to the CPU's, deterministic backward kernels, the fused attention
// kernels, and error messages.
#include <cstdio>
#include <cstring>
#include <vector>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "tensor/allocator.h"
#include "tensor/backend/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_test_util.h"

namespace hfrun {
namespace {

using testing::cuda0;
using testing::make_input;

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = ops::contiguous(ops::to_device(t, Device::cpu()));
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

TEST(CudaDevice, StatusNamesTheDevice) {
  HF_REQUIRE_CUDA();
  std::printf("%s\n", cuda_status().c_str());
  EXPECT_GE(cuda_device_count(), 1);
  EXPECT_NE(cuda_status().find("cuda:0"), std::string::npos) << cuda_status();
}

TEST(CudaDevice, RoundTripEveryDtype) {
  HF_REQUIRE_CUDA();
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64, DType::kU8,
                  DType::kBool}) {
    SCOPED_TRACE(dtype_name(t));
    // Values that survive the dtype: small integers, plus large ones for i64.
    std::vector<int64_t> v;
    for (int64_t i = 0; i < 1000; ++i) {
      if (t == DType::kBool) {
        v.push_back(i % 3 == 0);
      } else if (t == DType::kU8) {
        v.push_back(i % 251);
      } else if (t == DType::kI64) {
        v.push_back((i - 500) * 123456789012LL);
      } else {
        v.push_back((i % 201) - 100);
      }
    }
    Tensor host = ops::from_ints(v, {10, 100}, t);
    Tensor dev = ops::to_device(host, cuda0());
    ASSERT_TRUE(dev.device().is_cuda());
    EXPECT_EQ(dev.dtype(), t);
    Tensor back = ops::to_device(dev, Device::cpu());
    EXPECT_EQ(bytes_of(back), bytes_of(host)) << "contiguous round trip";
    // A transposed host view up, a transposed device view down.
    Tensor up = ops::to_device(ops::transpose(host, 0, 1), cuda0());
    EXPECT_EQ(bytes_of(up), bytes_of(ops::contiguous(ops::transpose(host, 0, 1))));
    Tensor down = ops::to_device(ops::transpose(dev, 0, 1), Device::cpu());
    EXPECT_EQ(bytes_of(down), bytes_of(ops::contiguous(ops::transpose(host, 0, 1))));
    EXPECT_EQ(dev.to_int_vector(), host.to_int_vector()) << "to_int_vector of a device tensor";
  }
}

TEST(CudaDevice, CrossDeviceCopyCastsAndBroadcasts) {
  HF_REQUIRE_CUDA();
  Tensor src = make_input({1, 64}, 3, Device::cpu());
  Tensor dst = ops::zeros({8, 64}, DType::kBF16, cuda0());
  ops::copy_(dst, src);  // host f32 [1, 64] broadcast into device bf16 [8, 64]
  Tensor want = ops::to_dtype(ops::expand(src, {8, 64}), DType::kBF16);
  EXPECT_EQ(bytes_of(dst), bytes_of(want));
  Tensor host = ops::zeros({64, 8}, DType::kF32);
  Tensor host_t = ops::transpose(host, 0, 1);
  ops::copy_(host_t, dst);  // device bf16 into a strided host f32 view
  EXPECT_EQ(bytes_of(ops::transpose(host, 0, 1)), bytes_of(ops::to_dtype(want, DType::kF32)));
  EXPECT_FLOAT_EQ(ops::sum(ops::to_device(src, cuda0())).item(), ops::sum(src).item());
}

TEST(CudaAllocator, NoCudaMallocInSteadyState) {
  HF_REQUIRE_CUDA();
  Allocator& alloc = allocator_for(cuda0());
  auto step = [] {
    Tensor x = make_input({64, 256}, 1, cuda0());
    x.set_requires_grad(true);
    Tensor w = make_input({256, 512}, 2, cuda0());
    w.set_requires_grad(true);
    Tensor y = layer_norm(gelu(matmul(x, w)), Tensor(), Tensor());
    autograd::backward(sum(softmax(y, -1)));
    return x.grad().numel() + w.grad().numel();
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: the cache learns the sizes
  const AllocatorStats before = alloc.stats();
  for (int i = 0; i < 10; ++i) step();
  const AllocatorStats after = alloc.stats();
  std::printf("allocator: allocated %zu, cached %zu, peak %zu bytes, %llu cudaMalloc, %llu hits\n",
              after.allocated_bytes, after.cached_bytes, after.peak_allocated_bytes,
              static_cast<unsigned long long>(after.system_allocs),
              static_cast<unsigned long long>(after.cache_hits));
  EXPECT_EQ(after.system_allocs, before.system_allocs) << "cudaMalloc in steady state";
  EXPECT_GT(after.cache_hits, before.cache_hits);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes) << "live bytes grew between steps";
  EXPECT_GE(after.peak_allocated_bytes, after.allocated_bytes);
  EXPECT_GT(after.cached_bytes, 0u);
}

TEST(CudaAllocator, StatsAndEmptyCache) {
  HF_REQUIRE_CUDA();
  Allocator& alloc = allocator_for(cuda0());
  const AllocatorStats s0 = alloc.stats();
  {
    Tensor t = ops::empty({3 << 20}, DType::kF32, cuda0());  // 12 MiB
    const AllocatorStats s1 = alloc.stats();
    EXPECT_GE(s1.allocated_bytes, s0.allocated_bytes + (size_t{12} << 20));
    EXPECT_GE(s1.peak_allocated_bytes, s1.allocated_bytes);
  }
  const AllocatorStats s2 = alloc.stats();
  EXPECT_EQ(s2.allocated_bytes, s0.allocated_bytes);
  EXPECT_GE(s2.cached_bytes, size_t{12} << 20);
  const uint64_t mallocs = s2.system_allocs;
  { Tensor again = ops::empty({3 << 20}, DType::kF32, cuda0()); }
  EXPECT_EQ(alloc.stats().system_allocs, mallocs) << "a freed block of the same size is reused";
  alloc.empty_cache();
  EXPECT_EQ(alloc.stats().cached_bytes, 0u);
  Tensor after = ops::ones({1000}, DType::kF32, cuda0());  // allocating after empty_cache works
  EXPECT_FLOAT_EQ(ops::sum(after).item(), 1000.0f);
}

TEST(CudaRandom, PhiloxFillsMatchCpuBitwise) {
  HF_REQUIRE_CUDA();
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1} << 20}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " n=" + std::to_string(n));
      Generator gc(42), gg(42);
      gc.advance(5);
      gg.advance(5);  // a non-zero offset
      EXPECT_EQ(bytes_of(ops::rand({n}, gg, t, -1, 2, cuda0())),
                bytes_of(ops::rand({n}, gc, t, -1, 2)))
          << "uniform";
      Tensor normal_gpu = ops::randn({n}, gg, t, 0.25, 3, cuda0());
      Tensor normal_cpu = ops::randn({n}, gc, t, 0.25, 3);
      EXPECT_EQ(gg.offset(), gc.offset());
      const std::vector<uint8_t> a = bytes_of(normal_gpu), b = bytes_of(normal_cpu);
      int64_t differ = 0;
      for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
      EXPECT_EQ(differ, 0) << "normal: " << differ << " bytes differ (log/sin/cos last-bit "
                           << "differences between CUDA and glibc would show here)";
    }
  }
}

TEST(CudaRandom, DropoutMaskMatchesCpu) {
  HF_REQUIRE_CUDA();
  Tensor x = make_input({4097}, 8, Device::cpu());
  Tensor xd = ops::to_device(x, cuda0());
  EXPECT_EQ(bytes_of(ops::dropout(xd, 0.1, 77)), bytes_of(ops::dropout(x, 0.1, 77)));
  EXPECT_EQ(bytes_of(ops::dropout_backward(xd, 0.5, 78)),
            bytes_of(ops::dropout_backward(x, 0.5, 78)));
}

TEST(CudaDeterminism, BackwardKernelsGiveTheSameBitsEveryRun) {
  HF_REQUIRE_CUDA();
  // Many repeats of few ids: the case where float atomics would reorder additions.
  std::vector<int64_t> ids(8192);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 2654435761u) % 17);
  Tensor id = ops::to_device(ops::from_ints(ids, {8192}), cuda0());
  Tensor gy = make_input({8192, 96}, 9, cuda0());
  Tensor x = make_input({4096, 96}, 10, cuda0());
  Tensor w = make_input({96}, 11, cuda0());
  auto run = [&] {
    Tensor ge = ops::embedding_backward(gy, id, 17);
    ops::LayerNormResult ln = ops::layer_norm(x, w, Tensor(), 1e-5);
    ops::LayerNormGrads g =
        ops::layer_norm_backward(ops::narrow(gy, 0, 0, 4096), x, w, ln.mean, ln.rstd, true);
    std::vector<uint8_t> all = bytes_of(ge);
    for (const Tensor& t : {g.gx, g.gweight, g.gbias, ops::sum(gy, {0})}) {
      const std::vector<uint8_t> b = bytes_of(t);
      all.insert(all.end(), b.begin(), b.end());
    }
    return all;
  };
  const std::vector<uint8_t> first = run();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(run(), first) << "run " << i + 1 << " differs";
  // And the embedding gradient equals the CPU's bit for bit (same order of additions).
  EXPECT_EQ(bytes_of(ops::embedding_backward(gy, id, 17)),
            bytes_of(ops::embedding_backward(ops::to_device(gy, Device::cpu()),
                                             ops::to_device(id, Device::cpu()), 17)));
}

// The flash kernels are what bf16 attention runs on CUDA (no [B, H, T, S] probabilities kept),
// they agree with the composed path on the same device, their backward gives the same bits on
// every run (no atomics), and f32 or an unsupported head size falls back to the composed path.
TEST(CudaAttention, FusedKernelsMatchComposedAndAreDeterministic) {
  HF_REQUIRE_CUDA();
  const Device d = cuda0();
  const int64_t B = 2, H = 3, T = 200, D = 64;
  Tensor q = make_input({B, H, T, D}, 21, d, DType::kBF16);
  Tensor k = make_input({B, H, T, D}, 22, d, DType::kBF16);
  Tensor v = make_input({B, H, T, D}, 23, d, DType::kBF16);
  Tensor gy = make_input({B, H, T, D}, 24, d, DType::kBF16);
  const double scale = 0.125;
  ops::AttentionResult fused = ops::attention(q, k, v, true, scale);
  ASSERT_TRUE(fused.lse.defined()) << "bf16 attention on CUDA did not take the fused kernel";
  EXPECT_FALSE(fused.probs.defined());
  EXPECT_EQ(fused.out.sizes(), (Shape{B, H, T, D}));
  auto grads_bytes = [&] {
    ops::AttentionGrads g = ops::attention_backward(gy, q, k, v, fused, true, scale);
    std::vector<uint8_t> all;
    for (const Tensor& t : {g.gq, g.gk, g.gv}) {
      const std::vector<uint8_t> b = bytes_of(t);
      all.insert(all.end(), b.begin(), b.end());
    }
    return all;
  };
  const std::vector<uint8_t> first = grads_bytes();
  for (int i = 0; i < 2; ++i) EXPECT_EQ(grads_bytes(), first) << "run " << i + 1 << " differs";
  EXPECT_EQ(bytes_of(ops::attention(q, k, v, true, scale).out), bytes_of(fused.out));

  const bool was = ops::set_fused_attention(false);
  ops::AttentionResult composed = ops::attention(q, k, v, true, scale);
  ops::set_fused_attention(was);
  ASSERT_TRUE(composed.probs.defined());
  EXPECT_LT(testing::rel_l2(fused.out, composed.out), 1e-2);
  ops::AttentionGrads gf = ops::attention_backward(gy, q, k, v, fused, true, scale);
  ops::AttentionGrads gc = ops::attention_backward(gy, q, k, v, composed, true, scale);
  EXPECT_LT(testing::rel_l2(gf.gq, gc.gq), 1e-2);
  EXPECT_LT(testing::rel_l2(gf.gk, gc.gk), 1e-2);
  EXPECT_LT(testing::rel_l2(gf.gv, gc.gv), 1e-2);

  Tensor q32 = ops::to_dtype(q, DType::kF32);
  EXPECT_TRUE(ops::attention(q32, q32, q32, true, scale).probs.defined()) << "f32 is composed";
  Tensor q24 = make_input({1, 2, 10, 24}, 25, d, DType::kBF16);
  EXPECT_TRUE(ops::attention(q24, q24, q24, true, scale).probs.defined()) << "head size 24";
}

// Grouped-query attention in the fused kernels: K, V with fewer heads are read in place (no
// repeat), the KV gradients sum each group in a fixed order (bitwise repeatable), and the result
// equals the composed path on the same device.
TEST(CudaAttention, GroupedQueryHeadsRunFusedAndDeterministic) {
  HF_REQUIRE_CUDA();
  const Device d = cuda0();
  const int64_t B = 2, H = 8, Hkv = 2, T = 150, D = 64;
  Tensor q = make_input({B, H, T, D}, 31, d, DType::kBF16);
  Tensor k = make_input({B, Hkv, T, D}, 32, d, DType::kBF16);
  Tensor v = make_input({B, Hkv, T, D}, 33, d, DType::kBF16);
  Tensor gy = make_input({B, H, T, D}, 34, d, DType::kBF16);
  const double scale = 0.125;
  ops::AttentionResult fused = ops::attention(q, k, v, true, scale);
  ASSERT_TRUE(fused.lse.defined()) << "GQA bf16 attention on CUDA did not take the fused kernel";
  ops::AttentionGrads g1 = ops::attention_backward(gy, q, k, v, fused, true, scale);
  ops::AttentionGrads g2 = ops::attention_backward(gy, q, k, v, fused, true, scale);
  EXPECT_EQ(g1.gk.sizes(), (Shape{B, Hkv, T, D}));
  EXPECT_EQ(bytes_of(g1.gk), bytes_of(g2.gk));
  EXPECT_EQ(bytes_of(g1.gv), bytes_of(g2.gv));
  const bool was = ops::set_fused_attention(false);
  ops::AttentionResult composed = ops::attention(q, k, v, true, scale);
  ops::set_fused_attention(was);
  ASSERT_TRUE(composed.probs.defined());
  EXPECT_LT(testing::rel_l2(fused.out, composed.out), 1e-2);
  ops::AttentionGrads gc = ops::attention_backward(gy, q, k, v, composed, true, scale);
  EXPECT_LT(testing::rel_l2(g1.gq, gc.gq), 1e-2);
  EXPECT_LT(testing::rel_l2(g1.gk, gc.gk), 1e-2);
  EXPECT_LT(testing::rel_l2(g1.gv, gc.gv), 1e-2);
}

// Right padding (key lengths) in the fused kernels and in the composed CUDA path: both equal the
// CPU's attention in f32 on the same inputs, for causal and full attention, with a length that
// ends inside a 64-key tile, one at a tile edge, and 0 (that batch's output and gradients are 0).
TEST(CudaAttention, KeyLengthsMatchTheCpu) {
  HF_REQUIRE_CUDA();
  const Device d = cuda0();
  const int64_t B = 4, H = 4, Hkv = 2, T = 130, D = 64;
  Tensor q = make_input({B, H, T, D}, 61, d, DType::kBF16);
  Tensor k = make_input({B, Hkv, T, D}, 62, d, DType::kBF16);
  Tensor v = make_input({B, Hkv, T, D}, 63, d, DType::kBF16);
  Tensor gy = make_input({B, H, T, D}, 64, d, DType::kBF16);
  const Tensor lengths_cpu = ops::from_ints({130, 77, 64, 0}, {B});
  const Tensor lengths = ops::to_device(lengths_cpu, d);
  auto cpu = [](const Tensor& x) {
    return ops::to_dtype(ops::to_device(x, Device::cpu()), DType::kF32);
  };
  const double scale = 0.125;
  for (bool causal : {false, true}) {
    ops::AttentionResult want = ops::attention(cpu(q), cpu(k), cpu(v), causal, scale, lengths_cpu);
    ops::AttentionGrads gwant =
        ops::attention_backward(cpu(gy), cpu(q), cpu(k), cpu(v), want, causal, scale);
    for (bool fused : {true, false}) {
      const bool was = ops::set_fused_attention(fused);
      ops::AttentionResult got = ops::attention(q, k, v, causal, scale, lengths);
      ops::set_fused_attention(was);
      EXPECT_EQ(got.lse.defined(), fused) << "the fused kernel takes padded batches";
      ops::AttentionGrads g = ops::attention_backward(gy, q, k, v, got, causal, scale);
      const std::string what =
          std::string(fused ? "fused" : "composed") + (causal ? " causal" : "");
      EXPECT_LT(testing::rel_l2(cpu(got.out), want.out), 1e-2) << what;
      EXPECT_LT(testing::rel_l2(cpu(g.gq), gwant.gq), 2e-2) << what;
      EXPECT_LT(testing::rel_l2(cpu(g.gk), gwant.gk), 2e-2) << what;
      EXPECT_LT(testing::rel_l2(cpu(g.gv), gwant.gv), 2e-2) << what;
      // Batch 3 has no keys: zeros, not NaN.
      std::vector<float> o = cpu(ops::contiguous(ops::narrow(got.out, 0, 3, 1))).to_vector();
      for (float x : o) ASSERT_EQ(x, 0.0f) << what;
    }
  }
}

// Attention dropout: the CUDA kernels have none, so ops::attention composes on the device and
// drops the probabilities with ops::dropout's mask; the CPU's fused kernel draws the same mask
// from the same key, so both sides give the same attention (values and gradients, bf16 on the
// device against f32 on the CPU), padded and causal.
TEST(CudaAttention, DropoutMatchesTheCpu) {
  HF_REQUIRE_CUDA();
  const Device d = cuda0();
  const int64_t B = 2, H = 4, Hkv = 2, T = 96, D = 64;
  Tensor q = make_input({B, H, T, D}, 71, d, DType::kBF16);
  Tensor k = make_input({B, Hkv, T, D}, 72, d, DType::kBF16);
  Tensor v = make_input({B, Hkv, T, D}, 73, d, DType::kBF16);
  Tensor gy = make_input({B, H, T, D}, 74, d, DType::kBF16);
  const Tensor lengths_cpu = ops::from_ints({96, 41}, {B});
  auto cpu = [](const Tensor& x) {
    return ops::to_dtype(ops::to_device(x, Device::cpu()), DType::kF32);
  };
  const DropoutMask drop{0.2, 0x5eedull};
  for (bool causal : {false, true}) {
    const Tensor kl_cpu = causal ? Tensor() : lengths_cpu;
    const Tensor kl = causal ? Tensor() : ops::to_device(lengths_cpu, d);
    ops::AttentionResult want =
        ops::attention(cpu(q), cpu(k), cpu(v), causal, 0.125, kl_cpu, true, 0, drop);
    ops::AttentionGrads gwant = ops::attention_backward(
        cpu(gy), want.q.defined() ? want.q : cpu(q), want.k.defined() ? want.k : cpu(k),
        want.v.defined() ? want.v : cpu(v), want, causal, 0.125);
    ops::AttentionResult got = ops::attention(q, k, v, causal, 0.125, kl, true, 0, drop);
    EXPECT_TRUE(got.probs.defined()) << "CUDA composes under dropout";
    ops::AttentionGrads g =
        ops::attention_backward(gy, got.q.defined() ? got.q : q, got.k.defined() ? got.k : k,
                                got.v.defined() ? got.v : v, got, causal, 0.125);
    const std::string what = causal ? "causal" : "padded";
    EXPECT_LT(testing::rel_l2(cpu(got.out), want.out), 1e-2) << what;
    EXPECT_LT(testing::rel_l2(cpu(g.gq), gwant.gq), 2e-2) << what;
    EXPECT_LT(testing::rel_l2(cpu(g.gk), gwant.gk), 2e-2) << what;
    EXPECT_LT(testing::rel_l2(cpu(g.gv), gwant.gv), 2e-2) << what;
  }
}

// linear + tanh GELU runs as one cuBLASLt GEMM with the GELU epilogue (f32 and bf16, with and
// without bias), equal to the composition on the same device: tight in f32, which also tells
// the tanh GELU from the erf one.
TEST(CudaGemmEpilogue, LinearGeluUsesTheGeluEpilogue) {
  HF_REQUIRE_CUDA();
  const Device d = cuda0();
  for (DType t : {DType::kF32, DType::kBF16}) {
    for (bool with_bias : {true, false}) {
      Tensor a = ops::to_dtype(make_input({256, 128}, 31, d), t);
      Tensor b = ops::to_dtype(make_input({128, 192}, 32, d, DType::kF32, 0.2), t);
      Tensor bias = with_bias ? make_input({192}, 33, d) : Tensor();
      const int64_t before = cuda::gelu_epilogue_calls();
      ops::MatmulGeluResult r = ops::matmul_gelu(a, b, bias, t);
      EXPECT_EQ(cuda::gelu_epilogue_calls(), before + 1)
          << dtype_name(t) << (with_bias ? " + bias" : "") << ": the epilogue was not used";
      Tensor pre = ops::matmul(a, b, bias, t);
      Tensor composed = ops::unary(ops::UnaryOp::kGeluTanh, pre);
      const double tol = t == DType::kF32 ? 1e-5 : 1e-2;
      EXPECT_LT(testing::rel_l2(r.pre, pre), tol) << dtype_name(t);
      EXPECT_LT(testing::rel_l2(r.out, composed), tol) << dtype_name(t);
    }
  }
}

// matmul_add_ (one cuBLASLt GEMM with beta = 1) adds a @ b into an f32 buffer: bf16 and f32
// operands, a transposed A (a weight gradient's g^T x) and a transposed B (an input gradient's
// g W^T for GPT-2's [in, out] weights), equal to the product added on the CPU.
TEST(CudaMatmul, MatmulAddAccumulatesIntoTheBuffer) {
  HF_REQUIRE_CUDA();
  const Device d = cuda0();
  auto cpu = [](const Tensor& x) {
    return ops::to_dtype(ops::to_device(x, Device::cpu()), DType::kF32);
  };
  for (DType t : {DType::kF32, DType::kBF16}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        Tensor a = ops::to_dtype(make_input(ta ? Shape{96, 80} : Shape{80, 96}, 41, d), t);
        Tensor b = ops::to_dtype(make_input(tb ? Shape{48, 96} : Shape{96, 48}, 42, d), t);
        if (ta) a = ops::transpose(a, 0, 1);
        if (tb) b = ops::transpose(b, 0, 1);
        Tensor out = make_input({80, 48}, 43, d);
        const Tensor want = ops::add(cpu(out), ops::matmul(cpu(a), cpu(b)));
        ops::matmul_add_(out, a, b);
        EXPECT_LT(testing::rel_l2(cpu(out), want), t == DType::kF32 ? 1e-5 : 1e-3)
            << dtype_name(t) << (ta ? " a^T" : "") << (tb ? " b^T" : "");
      }
    }
  }
}

TEST(CudaErrors, BadIdsAndTargetsAreReported) {
  HF_REQUIRE_CUDA();
  Tensor w = make_input({10, 4}, 12, cuda0());
  Tensor bad = ops::to_device(ops::from_ints({1, 2, 10}, {3}), cuda0());
  try {
    ops::embedding(w, bad);
    ADD_FAILURE() << "embedding accepted id 10 for 10 rows";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside [0, 10)"), std::string::npos) << e.what();
  }
  Tensor logits = make_input({3, 5}, 13, cuda0());
  EXPECT_THROW(ops::cross_entropy(logits, ops::to_device(ops::from_ints({0, 5, 1}, {3}), cuda0())),
               Error);
  EXPECT_THROW(ops::add(make_input({3}, 14, cuda0()), make_input({3}, 15, Device::cpu())), Error);
}

}  // namespace
}  // namespace hfrun
