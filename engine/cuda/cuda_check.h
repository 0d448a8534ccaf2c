// CUDA runtime, cuBLAS and NCCL results turned into absl::Status where the call is made: the
// Status names the call as written, the file and line, and the library's own error name and text
// (for NCCL also ncclGetLastError(comm), which says what went wrong inside the group).
//
// Example:
//   RETURN_IF_CUDA_ERROR(cudaMalloc(&ptr, bytes));
//   RETURN_IF_CUBLAS_ERROR(cublasSetStream(handle, stream));
//   RETURN_IF_NCCL_ERROR(ncclAllReduce(p, p, n, ncclFloat32, ncclSum, comm, stream), comm);
//   my_kernel<<<grid, block, 0, stream>>>(...);
//   RETURN_IF_CUDA_LAUNCH_ERROR("my_kernel");
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace fleet::native {

// The Status for a failed CUDA runtime call. Out of memory is ResourceExhausted; a missing or
// unusable device or driver is FailedPrecondition (the operator must fix the host); anything else
// is Internal.
inline absl::Status CudaStatus(cudaError_t err, absl::string_view call, absl::string_view file,
                               int line) {
  std::string message = absl::StrCat(call, " failed at ", file, ":", line, ": ",
                                     cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorSystemDriverMismatch:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

// The Status for a failed cuBLAS call: ResourceExhausted when it could not allocate,
// FailedPrecondition when the library could not start, Internal otherwise.
inline absl::Status CublasStatus(cublasStatus_t status, absl::string_view call,
                                 absl::string_view file, int line) {
  std::string message =
      absl::StrCat(call, " failed at ", file, ":", line, ": ", cublasGetStatusName(status), ": ",
                   cublasGetStatusString(status));
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUBLAS_STATUS_NOT_INITIALIZED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

// The Status for a failed NCCL call. `comm` may be null (calls made before the communicator
// exists). A peer that failed or a broken connection (remote and system errors) is Unavailable,
// since a new group may work; misuse is InvalidArgument; the rest is Internal.
inline absl::Status NcclStatus(ncclResult_t result, ncclComm_t comm, absl::string_view call,
                               absl::string_view file, int line) {
  const char* last = ncclGetLastError(comm);
  std::string message =
      absl::StrCat(call, " failed at ", file, ":", line, ": ", ncclGetErrorString(result),
                   (last != nullptr && last[0] != '\0') ? absl::StrCat(" (", last, ")") : "");
  switch (result) {
    case ncclSystemError:
    case ncclRemoteError:
      return absl::UnavailableError(message);
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace fleet::native

// Returns the Status of a failed CUDA runtime call from the enclosing function.
#define RETURN_IF_CUDA_ERROR(call)                                              \
  do {                                                                          \
    if (cudaError_t _cuda_err = (call); _cuda_err != cudaSuccess) {             \
      return ::fleet::native::CudaStatus(_cuda_err, #call, __FILE__, __LINE__); \
    }                                                                           \
  } while (0)

// After a kernel launch (<<<...>>>): returns the launch's error, naming `kernel`.
#define RETURN_IF_CUDA_LAUNCH_ERROR(kernel)                                               \
  do {                                                                                    \
    if (cudaError_t _cuda_err = cudaGetLastError(); _cuda_err != cudaSuccess) {           \
      return ::fleet::native::CudaStatus(_cuda_err, ::absl::StrCat("launch of ", kernel), \
                                         __FILE__, __LINE__);                             \
    }                                                                                     \
  } while (0)

// Returns the Status of a failed cuBLAS call from the enclosing function.
#define RETURN_IF_CUBLAS_ERROR(call)                                               \
  do {                                                                             \
    if (cublasStatus_t _cublas_st = (call); _cublas_st != CUBLAS_STATUS_SUCCESS) { \
      return ::fleet::native::CublasStatus(_cublas_st, #call, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

// Returns the Status of a failed NCCL call from the enclosing function; `comm` (or nullptr) is
// asked for its last error. Strict: ncclInProgress is an error here. Calls on a non-blocking
// communicator go through NcclCollectives, which waits for them instead.
#define RETURN_IF_NCCL_ERROR(call, comm)                                                \
  do {                                                                                  \
    if (ncclResult_t _nccl_res = (call); _nccl_res != ncclSuccess) {                    \
      return ::fleet::native::NcclStatus(_nccl_res, (comm), #call, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)
