# HFRUN_CUDA=AUTO|ON|OFF: AUTO builds the CUDA backend when nvcc is found, ON requires it, OFF
# never builds it. Sets HFRUN_WITH_CUDA and, when on, enables the CUDA language, finds the CUDA
# Toolkit (cudart, cuBLAS, cuBLASLt) and NCCL (imported target hfrun::nccl when found).
string(TOUPPER "${HFRUN_CUDA}" _hfrun_cuda_mode)
if(NOT _hfrun_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "HFRUN_CUDA must be AUTO, ON or OFF, got '${HFRUN_CUDA}'")
endif()

set(HFRUN_WITH_CUDA OFF)
if(NOT _hfrun_cuda_mode STREQUAL "OFF")
  # nvcc is usually not on PATH: look where the toolkit installs itself unless told otherwise.
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(HFRUN_WITH_CUDA ON)
  elseif(_hfrun_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "HFRUN_CUDA=ON but no CUDA compiler (nvcc) was found; set CUDACXX or "
      "CMAKE_CUDA_COMPILER, or configure with -DHFRUN_CUDA=OFF")
  else()
    message(STATUS "hfrun: no CUDA compiler found, building without the CUDA backend")
  endif()
endif()

if(HFRUN_WITH_CUDA)
  # A100 (sm_80) and H100/H200 (sm_90) unless the user chose.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES "80;90")
  endif()
  enable_language(CUDA)
  # CMake before 3.28 knows no CUDA20 dialect for nvcc, and takes the targets' CXX_STANDARD (20)
  # for their CUDA sources too. Request C++17 and make that request emit -std=c++20.
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA17_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA17_EXTENSION_COMPILE_OPTION "-std=c++20")
  if(CCACHE_PROGRAM)
    set(CMAKE_CUDA_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
  endif()
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "hfrun: CUDA backend on (CUDA ${CUDAToolkit_VERSION}, "
    "architectures ${CMAKE_CUDA_ARCHITECTURES})")

  # NCCL ships no CMake config: find its header and library next to the toolkit or in NCCL_HOME.
  find_path(NCCL_INCLUDE_DIR nccl.h
    HINTS ENV NCCL_HOME ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl
    HINTS ENV NCCL_HOME ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    add_library(hfrun::nccl UNKNOWN IMPORTED)
    set_target_properties(hfrun::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
    target_link_libraries(hfrun::nccl INTERFACE CUDA::cudart_static)
    set(HFRUN_WITH_NCCL ON)
    message(STATUS "hfrun: NCCL ${NCCL_LIBRARY}")
  else()
    set(HFRUN_WITH_NCCL OFF)
    message(WARNING "hfrun: nccl.h / libnccl not found (set NCCL_HOME): no NCCL process groups")
  endif()
endif()
