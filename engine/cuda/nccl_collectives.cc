// NcclCollectives: a non-blocking NCCL communicator, found through the rendezvous store, with
// every wait bounded by the group's timeout.
#include "engine/cuda/nccl_collectives.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "engine/cuda/cuda_check.h"

namespace fleet::native {
namespace {

// Device memory handed out by Allocate().
class DeviceBuffer final : public Buffer {
 public:
  explicit DeviceBuffer(DeviceMemory memory) : memory_(std::move(memory)) {}
  void* data() override { return memory_.get(); }
  size_t bytes() const override { return memory_.bytes(); }

 private:
  DeviceMemory memory_;
};

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kBFloat16:
      return ncclBfloat16;
    case DType::kInt32:
      return ncclInt32;
  }
  return ncclFloat32;
}

// Between two polls: yield for the first couple of thousand (a step's collectives finish in
// microseconds), then sleep briefly so a stuck peer does not cost a whole core.
void Pause(int& polls) {
  if (++polls < 2000) {
    std::this_thread::yield();
  } else {
    absl::SleepFor(absl::Microseconds(50));
  }
}

}  // namespace

// Turns an NCCL call on this communicator into a Status, waiting while it is in progress.
#define NCCL_COMPLETE(call, deadline) Complete((call), #call, __FILE__, __LINE__, (deadline))

absl::StatusOr<std::unique_ptr<NcclCollectives>> NcclCollectives::Create(
    KvStore* store, int rank, int size, int cuda_device, absl::Duration timeout,
    std::optional<absl::Duration> connect_timeout) {
  if (store == nullptr) return absl::InvalidArgumentError("NcclCollectives needs a KvStore");
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of a group of ", size,
                                                   ": expected 0 <= rank < size and size >= 1"));
  }
  const absl::Duration forming = connect_timeout.value_or(timeout);
  if (timeout <= absl::ZeroDuration() || forming <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL timeouts must be positive, got ",
                                                   absl::FormatDuration(timeout), " and ",
                                                   absl::FormatDuration(forming)));
  }
  int devices = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDeviceCount(&devices));
  if (cuda_device < 0 || cuda_device >= devices) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA device ", cuda_device,
                                                      " does not exist: this host has ", devices,
                                                      " (check CUDA_VISIBLE_DEVICES)"));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(cuda_device));
  const absl::Time deadline = absl::Now() + forming;

  ncclUniqueId id;
  if (rank == 0) {
    RETURN_IF_NCCL_ERROR(ncclGetUniqueId(&id), nullptr);
    if (size > 1) {
      RETURN_IF_ERROR(store->Set(kNcclUniqueIdKey, std::string(id.internal, NCCL_UNIQUE_ID_BYTES)));
    }
  } else {
    ASSIGN_OR_RETURN(std::string bytes, store->Get(kNcclUniqueIdKey, deadline));
    if (bytes.size() != NCCL_UNIQUE_ID_BYTES) {
      return absl::InvalidArgumentError(absl::StrCat("rendezvous key '", kNcclUniqueIdKey,
                                                     "' holds ", bytes.size(), " bytes, expected ",
                                                     NCCL_UNIQUE_ID_BYTES, " (an ncclUniqueId)"));
    }
    std::memcpy(id.internal, bytes.data(), NCCL_UNIQUE_ID_BYTES);
  }

  ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create(cuda_device));
  ASSIGN_OR_RETURN(DeviceMemory barrier_word, DeviceMemory::Create(cuda_device, sizeof(int)));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(barrier_word.get(), 0, sizeof(int), stream.get()));
  std::unique_ptr<NcclCollectives> self(new NcclCollectives(
      rank, size, cuda_device, timeout, std::move(stream), std::move(barrier_word)));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t result = ncclCommInitRankConfig(&self->comm_, size, id, rank, &config);
  absl::Status init =
      self->Complete(result, "ncclCommInitRankConfig", __FILE__, __LINE__, deadline);
  if (absl::IsDeadlineExceeded(init)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "NCCL group of ", size, " ranks did not form within ", absl::FormatDuration(forming),
        " (rank ", rank, ", cuda device ", cuda_device,
        "): a peer rank did not join or cannot be reached; the communicator was aborted"));
  }
  RETURN_IF_ERROR(init);
  RETURN_IF_ERROR(self->Synchronize());
  return self;
}

NcclCollectives::NcclCollectives(int rank, int size, int device, absl::Duration timeout,
                                 CudaStream stream, DeviceMemory barrier_word)
    : rank_(rank),
      size_(size),
      device_(device),
      timeout_(timeout),
      stream_(std::move(stream)),
      barrier_word_(std::move(barrier_word)) {}

NcclCollectives::~NcclCollectives() {
  if (comm_ == nullptr) return;
  ScopedDevice on(device_);
  // Finalize flushes what is still in flight; it is non-blocking here, so wait for it a bounded
  // time and abort instead when it does not finish (a peer is gone).
  bool finalized = false;
  ncclResult_t result = ncclCommFinalize(comm_);
  const absl::Time deadline = absl::Now() + std::min(timeout_, absl::Seconds(10));
  for (int polls = 0; result == ncclInProgress && absl::Now() < deadline; Pause(polls)) {
    if (ncclCommGetAsyncError(comm_, &result) != ncclSuccess) result = ncclInternalError;
  }
  finalized = result == ncclSuccess;
  if (finalized) {
    (void)ncclCommDestroy(comm_);
  } else {
    (void)ncclCommAbort(comm_);
  }
  comm_ = nullptr;
}

absl::Status NcclCollectives::UseDevice() const {
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  return absl::OkStatus();
}

absl::Status NcclCollectives::CheckUsable() const {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the NCCL group is broken since an earlier error (", broken_.ToString(),
                     "); recreate the group"));
  }
  return UseDevice();
}

absl::Status NcclCollectives::Break(absl::Status status) {
  if (broken_.ok()) broken_ = status;
  if (comm_ != nullptr) {
    ScopedDevice on(device_);
    (void)ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  return status;
}

absl::Status NcclCollectives::Complete(ncclResult_t result, absl::string_view call,
                                       const char* file, int line, absl::Time deadline) {
  if (result == ncclSuccess) return absl::OkStatus();
  if (result != ncclInProgress) return Break(NcclStatus(result, comm_, call, file, line));
  for (int polls = 0;; Pause(polls)) {
    ncclResult_t state = ncclInProgress;
    if (ncclResult_t r = ncclCommGetAsyncError(comm_, &state); r != ncclSuccess) {
      return Break(NcclStatus(r, comm_, "ncclCommGetAsyncError", __FILE__, __LINE__));
    }
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return Break(NcclStatus(state, comm_, call, file, line));
    if (absl::Now() >= deadline) {
      return Break(absl::DeadlineExceededError(
          absl::StrCat(call, " at ", file, ":", line, " was still in progress after ",
                       absl::FormatDuration(timeout_), "; the communicator was aborted")));
    }
  }
}

std::string NcclCollectives::Describe() const {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) {
    return absl::StrCat("nccl (cuda device ", device_, ")");
  }
  // Since NCCL 2.9 the code is major * 10000 + minor * 100 + patch.
  return absl::StrFormat("nccl %d.%d.%d (cuda device %d)", version / 10000, (version % 10000) / 100,
                         version % 100, device_);
}

absl::StatusOr<std::unique_ptr<Buffer>> NcclCollectives::Allocate(size_t bytes) {
  RETURN_IF_ERROR(UseDevice());
  ASSIGN_OR_RETURN(DeviceMemory memory, DeviceMemory::Create(device_, bytes));
  return std::make_unique<DeviceBuffer>(std::move(memory));
}

absl::Status NcclCollectives::Upload(Buffer& dst, const void* host, size_t bytes) {
  RETURN_IF_ERROR(CheckUsable());
  if (bytes > dst.bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("upload of ", bytes, " bytes into a buffer of ", dst.bytes(), " bytes"));
  }
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(dst.data(), host, bytes, cudaMemcpyHostToDevice, stream_.get()));
  return Synchronize();
}

absl::Status NcclCollectives::Download(void* host, Buffer& src, size_t bytes) {
  RETURN_IF_ERROR(CheckUsable());
  if (bytes > src.bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("download of ", bytes, " bytes from a buffer of ", src.bytes(), " bytes"));
  }
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(host, src.data(), bytes, cudaMemcpyDeviceToHost, stream_.get()));
  return Synchronize();
}

absl::Status NcclCollectives::AllReduceSum(void* data, size_t count, DType dtype) {
  RETURN_IF_ERROR(CheckUsable());
  if (count == 0) return absl::OkStatus();
  return NCCL_COMPLETE(
      ncclAllReduce(data, data, count, NcclType(dtype), ncclSum, comm_, stream_.get()),
      absl::Now() + timeout_);
}

absl::Status NcclCollectives::AllGather(const void* send, void* recv, size_t count, DType dtype) {
  RETURN_IF_ERROR(CheckUsable());
  if (count == 0) return absl::OkStatus();
  return NCCL_COMPLETE(ncclAllGather(send, recv, count, NcclType(dtype), comm_, stream_.get()),
                       absl::Now() + timeout_);
}

absl::Status NcclCollectives::AllToAllV(const void* send, const std::vector<size_t>& send_counts,
                                        void* recv, const std::vector<size_t>& recv_counts,
                                        DType dtype) {
  RETURN_IF_ERROR(CheckUsable());
  if (send_counts.size() != static_cast<size_t>(size_) ||
      recv_counts.size() != static_cast<size_t>(size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllToAllV needs one count per rank (", size_, "), got ", send_counts.size(),
                     " send counts and ", recv_counts.size(), " receive counts"));
  }
  const size_t element = DTypeSize(dtype);
  const ncclDataType_t type = NcclType(dtype);
  const char* send_bytes = static_cast<const char*>(send);
  char* recv_bytes = static_cast<char*>(recv);
  RETURN_IF_NCCL_ERROR(ncclGroupStart(), comm_);
  // Every send and receive is posted even after a failed one, so the group is always closed.
  absl::Status posted;
  size_t send_offset = 0;
  size_t recv_offset = 0;
  for (int peer = 0; peer < size_; ++peer) {
    const size_t out = send_counts[peer];
    const size_t in = recv_counts[peer];
    if (out > 0 && posted.ok()) {
      if (ncclResult_t r =
              ncclSend(send_bytes + send_offset * element, out, type, peer, comm_, stream_.get());
          r != ncclSuccess && r != ncclInProgress) {
        posted = NcclStatus(r, comm_, absl::StrCat("ncclSend to rank ", peer), __FILE__, __LINE__);
      }
    }
    if (in > 0 && posted.ok()) {
      if (ncclResult_t r =
              ncclRecv(recv_bytes + recv_offset * element, in, type, peer, comm_, stream_.get());
          r != ncclSuccess && r != ncclInProgress) {
        posted =
            NcclStatus(r, comm_, absl::StrCat("ncclRecv from rank ", peer), __FILE__, __LINE__);
      }
    }
    send_offset += out;
    recv_offset += in;
  }
  absl::Status ended = NCCL_COMPLETE(ncclGroupEnd(), absl::Now() + timeout_);
  if (!posted.ok()) return Break(posted);
  return ended;
}

absl::Status NcclCollectives::Broadcast(void* data, size_t count, DType dtype, int root) {
  RETURN_IF_ERROR(CheckUsable());
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " is not a rank of a group of ", size_));
  }
  if (count == 0) return absl::OkStatus();
  return NCCL_COMPLETE(
      ncclBroadcast(data, data, count, NcclType(dtype), root, comm_, stream_.get()),
      absl::Now() + timeout_);
}

absl::Status NcclCollectives::Barrier() {
  RETURN_IF_ERROR(AllReduceSum(barrier_word_.get(), 1, DType::kInt32));
  return Synchronize();
}

absl::Status NcclCollectives::Synchronize() {
  RETURN_IF_ERROR(CheckUsable());
  const absl::Time deadline = absl::Now() + timeout_;
  for (int polls = 0;; Pause(polls)) {
    cudaError_t query = cudaStreamQuery(stream_.get());
    if (query == cudaSuccess) break;
    if (query != cudaErrorNotReady) {
      return Break(CudaStatus(query, "cudaStreamQuery(stream)", __FILE__, __LINE__));
    }
    ncclResult_t state = ncclSuccess;
    if (ncclResult_t r = ncclCommGetAsyncError(comm_, &state); r != ncclSuccess) {
      return Break(NcclStatus(r, comm_, "ncclCommGetAsyncError", __FILE__, __LINE__));
    }
    if (state != ncclSuccess && state != ncclInProgress) {
      return Break(NcclStatus(state, comm_, "a collective on the stream", __FILE__, __LINE__));
    }
    if (absl::Now() >= deadline) {
      return Break(absl::DeadlineExceededError(
          absl::StrCat("the work enqueued on cuda device ", device_, " (rank ", rank_, " of ",
                       size_, ") did not finish within ", absl::FormatDuration(timeout_),
                       ": a peer rank stopped or is stuck; the communicator was aborted")));
    }
  }
  ncclResult_t state = ncclSuccess;
  if (ncclResult_t r = ncclCommGetAsyncError(comm_, &state); r != ncclSuccess) {
    return Break(NcclStatus(r, comm_, "ncclCommGetAsyncError", __FILE__, __LINE__));
  }
  if (state != ncclSuccess && state != ncclInProgress) {
    return Break(NcclStatus(state, comm_, "a collective on the stream", __FILE__, __LINE__));
  }
  return absl::OkStatus();
}

}  // namespace fleet::native
