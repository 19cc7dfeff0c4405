// Philox-4x32-10 (tensor/random.h) for a run of consecutive counters at once, the rounds in
// vector registers across the counters (AVX-512: 16 counters per register, AVX2: 8 in each of
// two; GCC does not vectorise the 32 x 32 -> 64-bit products by itself; other CPUs call
// philox4x32 per counter): the same words as
// philox4x32(seed, counter) for each counter, at a fraction of the cost of one call per
// counter. For kernels that draw a word per element (dropout).
#pragma once

#include <array>
#include <cstdint>

#include "tensor/random.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace hfrun::cpu {

// Counters per batch.
constexpr int kPhiloxBatch = 16;

// words[4 * l + j] = philox4x32(seed, first + l)[j] for l < kPhiloxBatch: the element order of a
// kernel whose element i uses counter i / 4, word i % 4.
[[gnu::always_inline]] inline void philox4x32_batch(uint64_t seed, uint64_t first,
                                                    uint32_t words[4 * kPhiloxBatch]) {
#if defined(__AVX512F__)
  // Lane l holds counter first + l; the high word is first's (+ 1 past a carry).
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first)), lanes);
  const __mmask16 carry = _mm512_cmplt_epu32_mask(lo, lanes);  // first's low word wrapped
  __m512i c0 = lo;
  __m512i c1 =
      _mm512_mask_add_epi32(_mm512_set1_epi32(static_cast<int>(first >> 32)), carry,
                            _mm512_set1_epi32(static_cast<int>(first >> 32)), _mm512_set1_epi32(1));
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  // The high 32 bits of each lane's 32 x 32 product: even lanes' from one 64-bit multiply, odd
  // lanes' from another on the words shifted down.
  // (The zero-masked forms throughout: GCC 12 warns, wrongly, that the plain ones' undefined
  // pass-through register is used uninitialized.)
  const auto mulhi = [](__m512i a, __m512i m) {
    const __m512i even = _mm512_maskz_srli_epi64(0xFF, _mm512_maskz_mul_epu32(0xFF, a, m), 32);
    const __m512i odd = _mm512_maskz_mul_epu32(0xFF, _mm512_maskz_srli_epi64(0xFF, a, 32), m);
    return _mm512_mask_blend_epi32(0xAAAA, even, odd);
  };
  for (int round = 0; round < 10; ++round) {
    const __m512i h0 = mulhi(c0, m0), l0 = _mm512_mullo_epi32(c0, m0);
    const __m512i h1 = mulhi(c2, m1), l1 = _mm512_mullo_epi32(c2, m1);
    const __m512i n0 =
        _mm512_xor_si512(_mm512_xor_si512(h1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    const __m512i n2 =
        _mm512_xor_si512(_mm512_xor_si512(h0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c1 = l1;
    c3 = l0;
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  // Transpose the four words of each counter into element order: per 128-bit lane k, u_m holds
  // counter 4k + m's words.
  const __m512i t0 = _mm512_maskz_unpacklo_epi32(0xFFFF, c0, c1);
  const __m512i t1 = _mm512_maskz_unpackhi_epi32(0xFFFF, c0, c1);
  const __m512i t2 = _mm512_maskz_unpacklo_epi32(0xFFFF, c2, c3);
  const __m512i t3 = _mm512_maskz_unpackhi_epi32(0xFFFF, c2, c3);
  const __m512i u[4] = {
      _mm512_maskz_unpacklo_epi64(0xFF, t0, t2), _mm512_maskz_unpackhi_epi64(0xFF, t0, t2),
      _mm512_maskz_unpacklo_epi64(0xFF, t1, t3), _mm512_maskz_unpackhi_epi64(0xFF, t1, t3)};
  // Counters 4k .. 4k + 3 from lane k of u[0..3].
  const __m512i idx01 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i idx23 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  const __m512i a01 = _mm512_permutex2var_epi64(u[0], idx01, u[1]);  // c0,c1 | c4,c5
  const __m512i a23 = _mm512_permutex2var_epi64(u[2], idx01, u[3]);  // c2,c3 | c6,c7
  const __m512i b01 = _mm512_permutex2var_epi64(u[0], idx23, u[1]);  // c8,c9 | c12,c13
  const __m512i b23 = _mm512_permutex2var_epi64(u[2], idx23, u[3]);  // c10,c11 | c14,c15
  const __m512i lo_half = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11);
  const __m512i hi_half = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
  _mm512_storeu_si512(words, _mm512_permutex2var_epi64(a01, lo_half, a23));
  _mm512_storeu_si512(words + 16, _mm512_permutex2var_epi64(a01, hi_half, a23));
  _mm512_storeu_si512(words + 32, _mm512_permutex2var_epi64(b01, lo_half, b23));
  _mm512_storeu_si512(words + 48, _mm512_permutex2var_epi64(b01, hi_half, b23));
#elif defined(__AVX2__)
  // Two registers of 8 counters per word; the same rounds as above.
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  const auto mulhi = [](__m256i a, __m256i m) {
    const __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(a, m), 32);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    return _mm256_blend_epi32(even, odd, 0xAA);
  };
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int half = 0; half < 2; ++half) {
    const uint64_t base = first + static_cast<uint64_t>(8 * half);
    const __m256i lo = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base)), lanes);
    // A lane whose low word wrapped (unsigned lo < lane) carries into the high word.
    const __m256i bias = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i wrapped =
        _mm256_cmpgt_epi32(_mm256_xor_si256(lanes, bias), _mm256_xor_si256(lo, bias));
    __m256i c0 = lo;
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(base >> 32)), wrapped);
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m256i h0 = mulhi(c0, m0), l0 = _mm256_mullo_epi32(c0, m0);
      const __m256i h1 = mulhi(c2, m1), l1 = _mm256_mullo_epi32(c2, m1);
      const __m256i n0 =
          _mm256_xor_si256(_mm256_xor_si256(h1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      const __m256i n2 =
          _mm256_xor_si256(_mm256_xor_si256(h0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c1 = l1;
      c3 = l0;
      c0 = n0;
      c2 = n2;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    alignas(32) uint32_t w[4][8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[0]), c0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[1]), c1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[2]), c2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[3]), c3);
    for (int l = 0; l < 8; ++l) {
      for (int j = 0; j < 4; ++j) words[4 * (8 * half + l) + j] = w[j][l];
    }
  }
#else
  for (int l = 0; l < kPhiloxBatch; ++l) {
    const std::array<uint32_t, 4> w = philox4x32(seed, first + static_cast<uint64_t>(l));
    for (int j = 0; j < 4; ++j) words[4 * l + j] = w[j];
  }
#endif
}

}  // namespace hfrun::cpu
