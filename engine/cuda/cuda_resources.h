// Move-only owners of CUDA handles (device memory, pinned host memory, a stream, a cuBLAS handle,
// an instantiated graph), each made by a static Create that returns a Status. Destructors are
// null-safe, make the owning device current for the release and restore the caller's device.
//
// Example:
//   ASSIGN_OR_RETURN(DeviceMemory weights, DeviceMemory::Create(device, bytes));
//   bf16* w = weights.as<bf16>();
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/cuda/cuda_check.h"

namespace fleet::native {

// Makes `device` current for its lifetime and restores the previous device afterwards. For
// releases in destructors, which cannot report errors: failures are ignored.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) (void)cudaSetDevice(device);
  }
  ~ScopedDevice() {
    int now = -1;
    if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) {
      (void)cudaSetDevice(previous_);
    }
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = -1;
};

// Device memory from cudaMalloc (never managed memory).
class DeviceMemory {
 public:
  DeviceMemory() = default;
  static absl::StatusOr<DeviceMemory> Create(int device, size_t bytes) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    void* ptr = nullptr;
    if (bytes > 0) RETURN_IF_CUDA_ERROR(cudaMalloc(&ptr, bytes));
    return DeviceMemory(device, ptr, bytes);
  }
  ~DeviceMemory() { Reset(); }
  DeviceMemory(DeviceMemory&& other) noexcept { *this = std::move(other); }
  DeviceMemory& operator=(DeviceMemory&& other) noexcept {
    if (this != &other) {
      Reset();
      device_ = other.device_;
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  DeviceMemory(int device, void* ptr, size_t bytes) : device_(device), ptr_(ptr), bytes_(bytes) {}
  void Reset() {
    if (ptr_ == nullptr) return;
    ScopedDevice on(device_);
    (void)cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  int device_ = 0;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost), so copies from and to the device are asynchronous.
class PinnedHostMemory {
 public:
  PinnedHostMemory() = default;
  static absl::StatusOr<PinnedHostMemory> Create(size_t bytes) {
    void* ptr = nullptr;
    if (bytes > 0) RETURN_IF_CUDA_ERROR(cudaMallocHost(&ptr, bytes));
    return PinnedHostMemory(ptr, bytes);
  }
  ~PinnedHostMemory() { Reset(); }
  PinnedHostMemory(PinnedHostMemory&& other) noexcept { *this = std::move(other); }
  PinnedHostMemory& operator=(PinnedHostMemory&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  PinnedHostMemory(const PinnedHostMemory&) = delete;
  PinnedHostMemory& operator=(const PinnedHostMemory&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  PinnedHostMemory(void* ptr, size_t bytes) : ptr_(ptr), bytes_(bytes) {}
  void Reset() {
    if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The owner of one handle of a device (stream, cuBLAS handle, event, graph): move-only, released
// with `Destroy` on its own device. Each kind below adds the Create that makes one.
template <typename Handle, auto Destroy>
class DeviceHandle {
 public:
  DeviceHandle() = default;
  // Takes ownership of `handle`, made on `device`.
  DeviceHandle(int device, Handle handle) : device_(device), handle_(handle) {}
  ~DeviceHandle() { Reset(); }
  DeviceHandle(DeviceHandle&& other) noexcept { *this = std::move(other); }
  DeviceHandle& operator=(DeviceHandle&& other) noexcept {
    if (this != &other) {
      Reset();
      device_ = other.device_;
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  DeviceHandle(const DeviceHandle&) = delete;
  DeviceHandle& operator=(const DeviceHandle&) = delete;

  Handle get() const { return handle_; }

 private:
  void Reset() {
    if (handle_ == nullptr) return;
    ScopedDevice on(device_);
    (void)Destroy(handle_);
    handle_ = nullptr;
  }

  int device_ = 0;
  Handle handle_ = nullptr;
};

// A stream that does not synchronise with the legacy default stream.
class CudaStream : public DeviceHandle<cudaStream_t, cudaStreamDestroy> {
 public:
  using DeviceHandle::DeviceHandle;
  static absl::StatusOr<CudaStream> Create(int device) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    cudaStream_t stream = nullptr;
    RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return CudaStream(device, stream);
  }
};

// A cuBLAS handle bound to one device.
class CublasHandle : public DeviceHandle<cublasHandle_t, cublasDestroy> {
 public:
  using DeviceHandle::DeviceHandle;
  static absl::StatusOr<CublasHandle> Create(int device) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    cublasHandle_t handle = nullptr;
    RETURN_IF_CUBLAS_ERROR(cublasCreate(&handle));
    return CublasHandle(device, handle);
  }
};

// A CUDA event with timing, for measuring work on a stream.
class CudaEvent : public DeviceHandle<cudaEvent_t, cudaEventDestroy> {
 public:
  using DeviceHandle::DeviceHandle;
  static absl::StatusOr<CudaEvent> Create(int device) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    cudaEvent_t event = nullptr;
    RETURN_IF_CUDA_ERROR(cudaEventCreate(&event));
    return CudaEvent(device, event);
  }
};

// An executable CUDA graph, made from the work captured on `stream` between BeginCapture and
// EndCapture (thread-local capture mode, so other threads' CUDA calls are unaffected).
class CudaGraph : public DeviceHandle<cudaGraphExec_t, cudaGraphExecDestroy> {
 public:
  using DeviceHandle::DeviceHandle;
  static absl::Status BeginCapture(cudaStream_t stream) {
    RETURN_IF_CUDA_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    return absl::OkStatus();
  }
  // Ends the capture begun on `stream` and instantiates it. Call it also when the capture failed
  // half way (the error of the failed call is what the caller reports): it ends the capture.
  static absl::StatusOr<CudaGraph> EndCapture(int device, cudaStream_t stream) {
    cudaGraph_t graph = nullptr;
    RETURN_IF_CUDA_ERROR(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
      return CudaStatus(err, "cudaGraphInstantiate(&exec, graph, 0)", __FILE__, __LINE__);
    }
    return CudaGraph(device, exec);
  }

  absl::Status Launch(cudaStream_t stream) const {
    RETURN_IF_CUDA_ERROR(cudaGraphLaunch(get(), stream));
    return absl::OkStatus();
  }
};

}  // namespace fleet::native
