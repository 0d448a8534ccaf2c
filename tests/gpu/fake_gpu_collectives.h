// A fake GpuCollectives: the ranks of a group as threads of one test on ONE GPU, each with its
// own stream, their collectives staged through host memory. NCCL needs a GPU per rank, so this is
// how the GPU model's tensor/expert-parallel path (world size > 1) is tested on a one-GPU host.
// Every collective is synchronous: it waits for the rank's stream, exchanges through the shared
// LoopbackGroup, and has written its result before it returns. Slow, exact (sums in double, in
// rank order), and only for tests.
//
// Example (one thread per rank):
//   LoopbackGroup group(2);
//   ASSIGN_OR_RETURN(auto comm, FakeGpuCollectives::Create(&group, rank, /*device=*/0));
//   ASSIGN_OR_RETURN(auto model, CreateCudaModel(shape, comm.get()));
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/cuda_resources.h"
#include "engine/cuda/gpu_collectives.h"

namespace fleet::native {

// What the ranks of one fake group share: a barrier and each rank's staged bytes.
class LoopbackGroup {
 public:
  explicit LoopbackGroup(int size)
      : size_(size), staged_(static_cast<size_t>(size)), counts_(static_cast<size_t>(size)) {}

  int size() const { return size_; }

  // Returns once every rank has called it (a reusable, generation-counted barrier).
  void Arrive() {
    absl::MutexLock lock(&mu_);
    const uint64_t generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      return;
    }
    auto passed = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return generation_ != generation; };
    mu_.Await(absl::Condition(&passed));
  }

  // Between two Arrive() calls rank r writes only its own slot; after the second everyone reads.
  std::vector<char>& staged(int rank) { return staged_[static_cast<size_t>(rank)]; }
  std::vector<size_t>& counts(int rank) { return counts_[static_cast<size_t>(rank)]; }

 private:
  const int size_;
  absl::Mutex mu_;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::vector<char>> staged_;
  std::vector<std::vector<size_t>> counts_;
};

class FakeGpuCollectives final : public GpuCollectives {
 public:
  static absl::StatusOr<std::unique_ptr<FakeGpuCollectives>> Create(LoopbackGroup* group, int rank,
                                                                    int device) {
    ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create(device));
    return std::unique_ptr<FakeGpuCollectives>(
        new FakeGpuCollectives(group, rank, device, std::move(stream)));
  }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override {
    absl::StatusOr<DeviceMemory> memory = DeviceMemory::Create(device_, bytes);
    if (!memory.ok()) return memory.status();
    return std::unique_ptr<Buffer>(new Memory(*std::move(memory)));
  }
  absl::Status Upload(Buffer& dst, const void* host, size_t bytes) override {
    return ToDevice(dst.data(), host, bytes);
  }
  absl::Status Download(void* host, Buffer& src, size_t bytes) override {
    return ToHost(host, src.data(), bytes);
  }

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string Describe() const override {
    return absl::StrCat("fake loopback (cuda device ", device_, ")");
  }

  absl::Status AllReduceSum(void* data, size_t count, DType dtype) override {
    const size_t bytes = count * DTypeSize(dtype);
    if (absl::Status st = Stage(data, bytes); !st.ok()) return Abandon(st);
    std::vector<double> sum(count, 0.0);
    for (int r = 0; r < size(); ++r) {
      const std::vector<char>& in = group_->staged(r);
      for (size_t i = 0; i < count; ++i) sum[i] += Load(dtype, in.data(), i);
    }
    std::vector<char> out(bytes);
    for (size_t i = 0; i < count; ++i) Store(dtype, out.data(), i, sum[i]);
    group_->Arrive();  // everyone has read the staged data
    return ToDevice(data, out.data(), bytes);
  }

  absl::Status AllGather(const void* send, void* recv, size_t count, DType dtype) override {
    const size_t bytes = count * DTypeSize(dtype);
    if (absl::Status st = Stage(send, bytes); !st.ok()) return Abandon(st);
    std::vector<char> out;
    for (int r = 0; r < size(); ++r) {
      out.insert(out.end(), group_->staged(r).begin(), group_->staged(r).end());
    }
    group_->Arrive();
    return ToDevice(recv, out.data(), out.size());
  }

  absl::Status AllToAllV(const void* send, const std::vector<size_t>& send_counts, void* recv,
                         const std::vector<size_t>& recv_counts, DType dtype) override {
    const size_t esize = DTypeSize(dtype);
    size_t sent = 0;
    for (size_t c : send_counts) sent += c;
    group_->counts(rank_) = send_counts;
    if (absl::Status st = Stage(send, sent * esize); !st.ok()) return Abandon(st);
    std::vector<char> out;
    for (int p = 0; p < size(); ++p) {
      const std::vector<size_t>& theirs = group_->counts(p);
      size_t offset = 0;
      for (int q = 0; q < rank_; ++q) offset += theirs[static_cast<size_t>(q)];
      const size_t n = theirs[static_cast<size_t>(rank_)];
      if (n != recv_counts[static_cast<size_t>(p)]) {
        group_->Arrive();
        return absl::InvalidArgumentError(
            absl::StrCat("rank ", rank_, " expects ", recv_counts[static_cast<size_t>(p)],
                         " elements from rank ", p, ", which sends ", n));
      }
      const char* from = group_->staged(p).data() + offset * esize;
      out.insert(out.end(), from, from + n * esize);
    }
    group_->Arrive();
    return ToDevice(recv, out.data(), out.size());
  }

  absl::Status Broadcast(void* data, size_t count, DType dtype, int root) override {
    const size_t bytes = count * DTypeSize(dtype);
    if (absl::Status st = Stage(data, bytes); !st.ok()) return Abandon(st);
    std::vector<char> out = group_->staged(root);
    group_->Arrive();
    return ToDevice(data, out.data(), bytes);
  }

  absl::Status Barrier() override {
    absl::Status synced = Synchronize();
    group_->Arrive();
    return synced;
  }

  absl::Status Synchronize() override {
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_.get()));
    return absl::OkStatus();
  }

  cudaStream_t stream() const override { return stream_.get(); }
  int device() const override { return device_; }
  absl::Status health() const override { return absl::OkStatus(); }

 private:
  class Memory final : public Buffer {
   public:
    explicit Memory(DeviceMemory memory) : memory_(std::move(memory)) {}
    void* data() override { return memory_.get(); }
    size_t bytes() const override { return memory_.bytes(); }

   private:
    DeviceMemory memory_;
  };

  FakeGpuCollectives(LoopbackGroup* group, int rank, int device, CudaStream stream)
      : group_(group), rank_(rank), device_(device), stream_(std::move(stream)) {}

  // Waits for this rank's stream, copies `bytes` of `device_data` into this rank's slot and
  // waits for every rank to have done the same. A failed copy still arrives, so no rank waits
  // forever (the test then fails on the Status).
  absl::Status Stage(const void* device_data, size_t bytes) {
    std::vector<char>& slot = group_->staged(rank_);
    slot.resize(bytes);
    absl::Status copied = ToHost(slot.data(), device_data, bytes);
    group_->Arrive();
    return copied;
  }

  // The second barrier of a collective whose staging failed, so the other ranks go on.
  absl::Status Abandon(absl::Status status) {
    group_->Arrive();
    return status;
  }

  absl::Status ToHost(void* host, const void* device_data, size_t bytes) {
    if (bytes == 0) return Synchronize();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(host, device_data, bytes, cudaMemcpyDeviceToHost, stream_.get()));
    return Synchronize();
  }

  absl::Status ToDevice(void* device_data, const void* host, size_t bytes) {
    if (bytes == 0) return absl::OkStatus();
    RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(device_data, host, bytes, cudaMemcpyHostToDevice, stream_.get()));
    return Synchronize();
  }

  static double Load(DType dtype, const char* p, size_t i) {
    switch (dtype) {
      case DType::kInt32: {
        int32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        return v;
      }
      case DType::kBFloat16: {
        uint16_t high;
        std::memcpy(&high, p + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(high) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
      }
      case DType::kFloat32:
        break;
    }
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }

  static void Store(DType dtype, char* p, size_t i, double v) {
    switch (dtype) {
      case DType::kInt32: {
        const int32_t x = static_cast<int32_t>(v);
        std::memcpy(p + 4 * i, &x, 4);
        return;
      }
      case DType::kBFloat16: {
        const float f = static_cast<float>(v);
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        bits += 0x7FFF + ((bits >> 16) & 1);  // round to nearest even
        const uint16_t high = static_cast<uint16_t>(bits >> 16);
        std::memcpy(p + 2 * i, &high, 2);
        return;
      }
      case DType::kFloat32:
        break;
    }
    const float f = static_cast<float>(v);
    std::memcpy(p + 4 * i, &f, 4);
  }

  LoopbackGroup* const group_;
  const int rank_;
  const int device_;
  CudaStream stream_;
};

}  // namespace fleet::native
