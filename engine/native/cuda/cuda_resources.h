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
#include "engine/native/cuda/cuda_check.h"

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

// A stream that does not synchronise with the legacy default stream.
class CudaStream {
 public:
  CudaStream() = default;
  static absl::StatusOr<CudaStream> Create(int device) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    cudaStream_t stream = nullptr;
    RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return CudaStream(device, stream);
  }
  ~CudaStream() { Reset(); }
  CudaStream(CudaStream&& other) noexcept { *this = std::move(other); }
  CudaStream& operator=(CudaStream&& other) noexcept {
    if (this != &other) {
      Reset();
      device_ = other.device_;
      stream_ = std::exchange(other.stream_, nullptr);
    }
    return *this;
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  cudaStream_t get() const { return stream_; }

 private:
  CudaStream(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  void Reset() {
    if (stream_ == nullptr) return;
    ScopedDevice on(device_);
    (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
};

// A cuBLAS handle bound to one device.
class CublasHandle {
 public:
  CublasHandle() = default;
  static absl::StatusOr<CublasHandle> Create(int device) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    cublasHandle_t handle = nullptr;
    RETURN_IF_CUBLAS_ERROR(cublasCreate(&handle));
    return CublasHandle(device, handle);
  }
  ~CublasHandle() { Reset(); }
  CublasHandle(CublasHandle&& other) noexcept { *this = std::move(other); }
  CublasHandle& operator=(CublasHandle&& other) noexcept {
    if (this != &other) {
      Reset();
      device_ = other.device_;
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;

  cublasHandle_t get() const { return handle_; }

 private:
  CublasHandle(int device, cublasHandle_t handle) : device_(device), handle_(handle) {}
  void Reset() {
    if (handle_ == nullptr) return;
    ScopedDevice on(device_);
    (void)cublasDestroy(handle_);
    handle_ = nullptr;
  }

  int device_ = 0;
  cublasHandle_t handle_ = nullptr;
};

// A CUDA event with timing, for measuring work on a stream.
class CudaEvent {
 public:
  CudaEvent() = default;
  static absl::StatusOr<CudaEvent> Create(int device) {
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    cudaEvent_t event = nullptr;
    RETURN_IF_CUDA_ERROR(cudaEventCreate(&event));
    return CudaEvent(device, event);
  }
  ~CudaEvent() { Reset(); }
  CudaEvent(CudaEvent&& other) noexcept { *this = std::move(other); }
  CudaEvent& operator=(CudaEvent&& other) noexcept {
    if (this != &other) {
      Reset();
      device_ = other.device_;
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  cudaEvent_t get() const { return event_; }

 private:
  CudaEvent(int device, cudaEvent_t event) : device_(device), event_(event) {}
  void Reset() {
    if (event_ == nullptr) return;
    ScopedDevice on(device_);
    (void)cudaEventDestroy(event_);
    event_ = nullptr;
  }

  int device_ = 0;
  cudaEvent_t event_ = nullptr;
};

// An executable CUDA graph, made from the work captured on `stream` between BeginCapture and
// EndCapture (thread-local capture mode, so other threads' CUDA calls are unaffected).
class CudaGraph {
 public:
  CudaGraph() = default;
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
  ~CudaGraph() { Reset(); }
  CudaGraph(CudaGraph&& other) noexcept { *this = std::move(other); }
  CudaGraph& operator=(CudaGraph&& other) noexcept {
    if (this != &other) {
      Reset();
      device_ = other.device_;
      exec_ = std::exchange(other.exec_, nullptr);
    }
    return *this;
  }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  absl::Status Launch(cudaStream_t stream) const {
    RETURN_IF_CUDA_ERROR(cudaGraphLaunch(exec_, stream));
    return absl::OkStatus();
  }

 private:
  CudaGraph(int device, cudaGraphExec_t exec) : device_(device), exec_(exec) {}
  void Reset() {
    if (exec_ == nullptr) return;
    ScopedDevice on(device_);
    (void)cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
  }

  int device_ = 0;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace fleet::native
