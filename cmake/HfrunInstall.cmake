# `cmake --install build --prefix P`: the module headers under P/include/hfrun/<module>/ (the
# layout include/hfrun/hfrun.h includes them by), the umbrella header P/include/hfrun/hfrun.h,
# the static libraries, the hfrun executable and a CMake package, so that a program built
# elsewhere links the library with
#   find_package(hfrun REQUIRED)
#   target_link_libraries(app PRIVATE hfrun::hfrun)
# (examples/embed is such a program; tests/embed/test_embed.sh builds it against an install).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(HFRUN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/hfrun)
set(HFRUN_LIBRARY_TARGETS hfrun_common hfrun_tensor hfrun_autograd hfrun_io hfrun_nn hfrun_optim
  hfrun_models hfrun_data hfrun_distributed hfrun_train)

# Headers. Private ones stay behind: the backends (oneDNN, OpenMP and CUDA details) and the
# helpers that include foreign headers (nlohmann/json, the vectorised loops).
foreach(module common tensor autograd io nn optim models data distributed train)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${module}/
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hfrun/${module}
    FILES_MATCHING PATTERN "*.h"
    PATTERN "backend" EXCLUDE
    PATTERN "io_util.h" EXCLUDE
    PATTERN "fused.h" EXCLUDE
    PATTERN "checkpoint_format.h" EXCLUDE)
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/include/hfrun/hfrun.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hfrun)

install(TARGETS ${HFRUN_LIBRARY_TARGETS} hfrun EXPORT hfrunTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS hfrun_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT hfrunTargets NAMESPACE hfrun:: DESTINATION ${HFRUN_INSTALL_CMAKEDIR})

# The config file recreates what the static libraries link privately; the oneDNN paths found
# here are its hints.
get_filename_component(HFRUN_DNNL_LIBRARY_DIR "${DNNL_LIBRARY}" DIRECTORY)
if(HFRUN_WITH_NCCL)
  get_filename_component(HFRUN_NCCL_LIBRARY_DIR "${NCCL_LIBRARY}" DIRECTORY)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/hfrunConfig.cmake.in
  ${PROJECT_BINARY_DIR}/hfrunConfig.cmake
  INSTALL_DESTINATION ${HFRUN_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/hfrunConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/hfrunConfig.cmake ${PROJECT_BINARY_DIR}/hfrunConfigVersion.cmake
  DESTINATION ${HFRUN_INSTALL_CMAKEDIR})
