# The CUDA backend is built when EPSERVE_CUDA is ON and nvcc is found (PATH,
# CUDACXX, or the default toolkit location). Everything else builds without it.
set(EPSERVE_WITH_CUDA OFF)
# The NCCL communicator (worker/comm) is built when CUDA is on, EPSERVE_NCCL is
# ON and NCCL's header and library are found.
option(EPSERVE_NCCL "Build the NCCL communicator when CUDA and NCCL are found" ON)
set(EPSERVE_WITH_NCCL OFF)
# What `--version` prints about the backends (common/version.h.in).
set(EPSERVE_BACKENDS_TEXT "CPU backend only")
if(EPSERVE_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(EPSERVE_NVCC nvcc HINTS /usr/local/cuda/bin)
    if(EPSERVE_NVCC)
      set(CMAKE_CUDA_COMPILER ${EPSERVE_NVCC})
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # H100 / H200. Override with -DCMAKE_CUDA_ARCHITECTURES=... for others.
      set(CMAKE_CUDA_ARCHITECTURES 90a)
    endif()
    enable_language(CUDA)
    # CMake 3.25 knows no CUDA20 flag for nvcc; device code is C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    # NCCL ships with the toolkit on the build machine and in /usr on the GPU
    # machine; without it the CUDA backend builds and GPU workers use Gloo.
    find_path(EPSERVE_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
    find_library(EPSERVE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
    set(EPSERVE_WITH_CUDA ON)
    set(EPSERVE_BACKENDS_TEXT
        "CPU and CUDA backends, CUDA ${CUDAToolkit_VERSION}, arch ${CMAKE_CUDA_ARCHITECTURES}")
    message(STATUS "CUDA backend: ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, arch ${CMAKE_CUDA_ARCHITECTURES})")
    if(EPSERVE_NCCL AND EPSERVE_NCCL_INCLUDE AND EPSERVE_NCCL_LIBRARY)
      set(EPSERVE_WITH_NCCL ON)
      file(STRINGS "${EPSERVE_NCCL_INCLUDE}/nccl.h" nccl_defines
           REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
      set(nccl_version "")
      foreach(line IN LISTS nccl_defines)
        string(REGEX REPLACE "^#define NCCL_[A-Z]+ +([0-9]+).*" "\\1" part "${line}")
        list(APPEND nccl_version "${part}")
      endforeach()
      list(JOIN nccl_version "." nccl_version)
      string(APPEND EPSERVE_BACKENDS_TEXT ", NCCL ${nccl_version} (headers)")
      message(STATUS "NCCL communicator: ON (${EPSERVE_NCCL_LIBRARY}, ${nccl_version})")
    else()
      message(STATUS "NCCL communicator: OFF (EPSERVE_NCCL=${EPSERVE_NCCL}, nccl.h or libnccl not found)")
    endif()
  else()
    message(STATUS "CUDA backend: OFF (nvcc not found)")
  endif()
else()
  message(STATUS "CUDA backend: OFF (EPSERVE_CUDA=OFF)")
endif()
