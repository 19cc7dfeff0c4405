// cuBLASLt's entry points, loaded with dlopen on first use instead of linked: the library's
// static initialisers touch ~140 MB (and its teardown ~50 MB more) in every process that links
// it, which a CPU-only run of a CUDA-enabled build should not pay. Found the way the dynamic
// linker finds libraries (LD_LIBRARY_PATH, the executable's runpath, ldconfig), then in the
// toolkit's library directory this build used.
#pragma once

#include <cublasLt.h>

namespace hfrun::cuda {

struct CublasLtApi {
  decltype(&::cublasLtGetVersion) GetVersion;
  decltype(&::cublasLtGetStatusName) GetStatusName;
  decltype(&::cublasLtGetStatusString) GetStatusString;
  decltype(&::cublasLtCreate) Create;
  decltype(&::cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&::cublasLtMatrixLayoutSetAttribute) MatrixLayoutSetAttribute;
  decltype(&::cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&::cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&::cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&::cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
  decltype(&::cublasLtMatmul) Matmul;
};

// The loaded library (thread-safe; loaded once). Throws a runtime error naming the library and
// the loader's message when it cannot be loaded or lacks an entry point.
const CublasLtApi& cublaslt();

}  // namespace hfrun::cuda
