// cuBLASLt is loaded on first use, not at start-up (a CPU run of a CUDA build never maps it),
// and the loaded library is the toolkit's major version. Needs no GPU: the library loads and
// reports its version without a device.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "tensor/backend/cuda/cublaslt_api.h"

namespace hfrun {
namespace {

bool mapped(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  std::stringstream text;
  text << maps.rdbuf();
  return text.str().find(name) != std::string::npos;
}

TEST(CublasLtLoad, MappedOnlyOnceUsed) {
  // gtest_discover_tests runs each test in a process of its own.
  EXPECT_FALSE(mapped("libcublasLt.so"));
  const size_t version = cuda::cublaslt().GetVersion();
  EXPECT_EQ(version / 10000, static_cast<size_t>(CUBLAS_VER_MAJOR)) << version;
  EXPECT_TRUE(mapped("libcublasLt.so"));
  EXPECT_EQ(&cuda::cublaslt(), &cuda::cublaslt());  // loaded once
}

}  // namespace
}  // namespace hfrun
