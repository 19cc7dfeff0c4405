#include "tensor/backend/cuda/cublaslt_api.h"

#include <dlfcn.h>

#include <string>

#include "common/error.h"

#ifndef HFRUN_CUDA_LIBRARY_DIR
#define HFRUN_CUDA_LIBRARY_DIR ""
#endif

namespace hfrun::cuda {
namespace {

#define HF_STR2(x) #x
#define HF_STR(x) HF_STR2(x)
constexpr const char* kSoname = "libcublasLt.so." HF_STR(CUBLAS_VER_MAJOR);

CublasLtApi load() {
  void* lib = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  std::string why = lib ? "" : dlerror();
  const std::string fallback = std::string(HFRUN_CUDA_LIBRARY_DIR) + "/" + kSoname;
  if (!lib && std::string(HFRUN_CUDA_LIBRARY_DIR).size() > 0) {
    lib = dlopen(fallback.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  HF_CHECK(lib != nullptr, "cannot load ", kSoname, " (", why,
           "): CUDA matmuls need cuBLASLt; put the CUDA toolkit's library directory on "
           "LD_LIBRARY_PATH");
  CublasLtApi api{};
  auto sym = [lib](auto& fn, const char* name) {
    void* p = dlsym(lib, name);
    HF_CHECK(p != nullptr, kSoname, " has no ", name, " (", dlerror(), ")");
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
  };
  sym(api.GetVersion, "cublasLtGetVersion");
  sym(api.GetStatusName, "cublasLtGetStatusName");
  sym(api.GetStatusString, "cublasLtGetStatusString");
  sym(api.Create, "cublasLtCreate");
  sym(api.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
  sym(api.MatrixLayoutSetAttribute, "cublasLtMatrixLayoutSetAttribute");
  sym(api.MatmulDescCreate, "cublasLtMatmulDescCreate");
  sym(api.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
  sym(api.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
  sym(api.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
  sym(api.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
  sym(api.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
  sym(api.Matmul, "cublasLtMatmul");
  return api;
}

}  // namespace

const CublasLtApi& cublaslt() {
  static const CublasLtApi api = load();  // a failed load throws, and is tried again next time
  return api;
}

}  // namespace hfrun::cuda
