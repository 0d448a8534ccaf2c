// GlooCollectives: Gloo's rendezvous on a KvStore, a full mesh of TCP pairs, and Gloo's
// algorithms with their exceptions turned into Status.
#include "engine/collectives/gloo_collectives.h"

#include <signal.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/host_port.h"
#include "common/status_macros.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoallv.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/common/logging.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/address.h"
#include "gloo/transport/tcp/device.h"

namespace fleet::native {
namespace {

constexpr std::align_val_t kHostAlignment{64};

class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t bytes)
      : bytes_(bytes), data_(::operator new(std::max<size_t>(bytes, 1), kHostAlignment)) {}
  ~HostBuffer() override { ::operator delete(data_, kHostAlignment); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  const size_t bytes_;
  void* const data_;
};

// Gloo's rendezvous store on top of ours. Gloo cannot take a Status, so a failure is kept here
// and thrown as an IoException for Gloo to pass up to Create, which returns the kept Status.
class KvStoreAdapter final : public gloo::rendezvous::Store {
 public:
  KvStoreAdapter(KvStore* store, std::string prefix, absl::Duration timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::Status status = store_->Set(prefix_ + key, std::string(data.begin(), data.end()));
    if (!status.ok()) Fail(key, std::move(status));
  }

  std::vector<char> get(const std::string& key) override {
    const std::string& value = Fetch(key, absl::Now() + timeout_);
    return std::vector<char>(value.begin(), value.end());
  }

  void wait(const std::vector<std::string>& keys) override {
    WaitUntil(keys, absl::Now() + timeout_);
  }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    // Gloo passes kNoTimeout (zero) for "no limit"; ours always has one.
    absl::Duration limit = timeout.count() > 0 ? absl::FromChrono(timeout) : timeout_;
    WaitUntil(keys, absl::Now() + std::min(limit, timeout_));
  }

  // The value Gloo read for `key`, or null.
  const std::string* Value(const std::string& key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  const absl::Status& error() const { return error_; }
  const std::string& failed_key() const { return failed_key_; }

 private:
  void WaitUntil(const std::vector<std::string>& keys, absl::Time deadline) {
    for (const std::string& key : keys) Fetch(key, deadline);
  }

  const std::string& Fetch(const std::string& key, absl::Time deadline) {
    auto it = values_.find(key);
    if (it != values_.end()) return it->second;
    absl::StatusOr<std::string> value = store_->Get(prefix_ + key, deadline);
    if (!value.ok()) Fail(key, value.status());
    return values_.emplace(key, *std::move(value)).first->second;
  }

  [[noreturn]] void Fail(const std::string& key, absl::Status status) {
    failed_key_ = key;
    error_ = std::move(status);
    throw gloo::IoException(std::string(error_.message()));
  }

  KvStore* const store_;
  const std::string prefix_;
  const absl::Duration timeout_;
  std::map<std::string, std::string> values_;
  absl::Status error_;
  std::string failed_key_;
};

// Gloo's rendezvous context, with its own decoding of the addresses a peer published.
class MeshContext final : public gloo::rendezvous::Context {
 public:
  using gloo::rendezvous::Context::Context;

  // "[10.0.0.2]:41234": the listening address `peer` published for its pair with this rank, as
  // Gloo's messages print it (without the pair's sequence number).
  std::string PeerAddress(const std::string& published, int peer) {
    std::vector<char> all(published.begin(), published.end());
    std::string text = gloo::transport::tcp::Address(extractAddress(all, peer)).str();
    return text.substr(0, text.find('$'));
  }
};

void IgnoreSigpipeUnlessHandled() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

bool IsTimeout(const std::string& message) {
  std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "timed out") || absl::StrContains(lower, "timeout");
}

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

// Calls fn(T{}) with T the C++ type of `dtype` (float32 or int32; CheckUsable refused bfloat16).
template <typename Fn>
void WithType(DType dtype, Fn&& fn) {
  if (dtype == DType::kInt32) {
    fn(int32_t{});
  } else {
    fn(float{});
  }
}

// A non-null pointer for empty buffers: Gloo copies and sends zero bytes from it.
char empty_byte;
void* NonNull(void* p) { return p != nullptr ? p : &empty_byte; }

}  // namespace

GlooCollectives::GlooCollectives(int rank, int size, GlooOptions options)
    : rank_(rank), size_(size), options_(std::move(options)) {}

GlooCollectives::~GlooCollectives() = default;

absl::StatusOr<std::unique_ptr<GlooCollectives>> GlooCollectives::Create(
    KvStore* store, int rank, int size, const GlooOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("GlooCollectives needs a KvStore");
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("Gloo group of size ", size, " has no rank ",
                                                   rank, "; expected 0 <= rank < size"));
  }
  if (options.interface.empty() == options.address.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GlooOptions: set exactly one of interface (GLOO_SOCKET_IFNAME, e.g. \"eth0\") and "
        "address (e.g. \"10.0.0.2\"); got interface \"",
        options.interface, "\" and address \"", options.address, "\""));
  }
  if (options.timeout <= absl::ZeroDuration() || options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GlooOptions: timeouts must be positive, got connect ",
                     absl::FormatDuration(options.connect_timeout), " and ",
                     absl::FormatDuration(options.timeout)));
  }
  IgnoreSigpipeUnlessHandled();

  std::unique_ptr<GlooCollectives> comm(new GlooCollectives(rank, size, options));
  gloo::transport::tcp::attr attr;
  if (!options.interface.empty()) {
    attr.iface = options.interface;
  } else {
    attr.hostname = options.address;
  }
  try {
    comm->device_ = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("Gloo cannot listen on ", comm->Describe(), ": ", e.what(),
                     "; name an interface or address this node has (ip -brief address)"));
  }
  if (size == 1) return comm;

  KvStoreAdapter adapter(store, options.key_prefix, options.connect_timeout);
  auto context = std::make_shared<MeshContext>(rank, size);
  context->setTimeout(absl::ToChronoMilliseconds(options.connect_timeout));
  const std::string where = absl::StrCat("rank ", rank, " of ", size, " (", comm->Describe(), ")");
  try {
    context->connectFullMesh(adapter, comm->device_);
  } catch (const std::exception& e) {
    if (!adapter.error().ok()) {
      int peer = -1;
      std::string who = absl::SimpleAtoi(adapter.failed_key(), &peer)
                            ? absl::StrCat("rank ", peer, "'s address")
                            : absl::StrCat("key '", adapter.failed_key(), "'");
      return absl::Status(adapter.error().code(),
                          absl::StrCat(where, ": waiting for ", who,
                                       " in the rendezvous store: ", adapter.error().message(),
                                       "; every rank of the group must start within ",
                                       absl::FormatDuration(options.connect_timeout)));
    }
    std::string message = e.what();
    if (IsTimeout(message)) {
      return absl::DeadlineExceededError(absl::StrCat(
          where, ": connecting to the other ranks timed out: ", message,
          "; check that the ranks can reach each other on this interface (firewall, routes)"));
    }
    return absl::UnavailableError(absl::StrCat(where, ": connecting to the other ranks failed: ",
                                               message, "; a peer exited or is unreachable"));
  }
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    if (const std::string* published = adapter.Value(std::to_string(peer))) {
      try {
        comm->peer_ranks_[context->PeerAddress(*published, peer)] = peer;
      } catch (const std::exception&) {
        // Only the error messages lose the peer's rank.
      }
    }
  }
  // Connected: from now on a peer that does not answer within `timeout` breaks the group.
  context->setTimeout(absl::ToChronoMilliseconds(options.timeout));
  comm->context_ = std::move(context);
  return comm;
}

std::string GlooCollectives::Describe() const {
  return absl::StrCat("gloo/tcp ",
                      options_.interface.empty() ? options_.address : options_.interface);
}

absl::StatusOr<std::unique_ptr<Buffer>> GlooCollectives::Allocate(size_t bytes) {
  try {
    return std::make_unique<HostBuffer>(bytes);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes of host memory for collectives"));
  }
}

absl::Status GlooCollectives::Upload(Buffer& dst, const void* host, size_t bytes) {
  if (dynamic_cast<HostBuffer*>(&dst) == nullptr) {
    return absl::InvalidArgumentError("Upload: the buffer was not made by GlooCollectives");
  }
  if (bytes > dst.bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Upload of ", bytes, " bytes into a buffer of ", dst.bytes()));
  }
  if (bytes > 0) std::memcpy(dst.data(), host, bytes);
  return absl::OkStatus();
}

absl::Status GlooCollectives::Download(void* host, Buffer& src, size_t bytes) {
  if (dynamic_cast<HostBuffer*>(&src) == nullptr) {
    return absl::InvalidArgumentError("Download: the buffer was not made by GlooCollectives");
  }
  if (bytes > src.bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Download of ", bytes, " bytes from a buffer of ", src.bytes()));
  }
  if (bytes > 0) std::memcpy(host, src.data(), bytes);
  return absl::OkStatus();
}

absl::Status GlooCollectives::CheckUsable(DType dtype) const {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the Gloo group is broken by an earlier error (", broken_.message(),
                     "); exit so the group can be recreated"));
  }
  if (dtype == DType::kBFloat16) {
    return absl::InvalidArgumentError(
        "bfloat16 collectives need the NCCL backend; Gloo carries float32 and int32");
  }
  if (dtype != DType::kFloat32 && dtype != DType::kInt32) {
    return absl::InvalidArgumentError("unknown DType for a Gloo collective");
  }
  return absl::OkStatus();
}

template <typename Fn>
absl::Status GlooCollectives::Run(const std::string& what, Fn&& fn) {
  std::string message;
  // Gloo refusing the arguments (sizes that differ across ranks, say) rather than the network.
  bool misuse = false;
  try {
    fn();
    return absl::OkStatus();
  } catch (const gloo::IoException& e) {
    message = e.what();
  } catch (const gloo::InvalidOperationException& e) {
    message = e.what();
    misuse = true;
  } catch (const gloo::Exception& e) {
    message = e.what();
  } catch (const gloo::EnforceNotMet& e) {
    message = e.what();
    misuse = true;
  } catch (const std::exception& e) {
    message = e.what();
    misuse = true;
  }
  const std::string peer = PeerIn(message);
  const std::string where =
      absl::StrCat("gloo ", what, " on rank ", rank_, " of ", size_, " (", Describe(), ")");
  if (!misuse && IsTimeout(message)) {
    broken_ = absl::DeadlineExceededError(absl::StrCat(
        where, ": no answer from ", peer, " within ", absl::FormatDuration(options_.timeout), " (",
        message, "); a rank is stuck, slow or gone, so the group must be recreated"));
  } else if (!misuse) {
    broken_ = absl::UnavailableError(
        absl::StrCat(where, ": the connection to ", peer, " failed (", message,
                     "); the peer exited or the network failed, so the group must be recreated"));
  } else {
    // A bug here or in the caller, and the group is out of step.
    broken_ = absl::InternalError(absl::StrCat(where, ": Gloo rejected the call (", message, ")"));
  }
  return broken_;
}

std::string GlooCollectives::PeerIn(const std::string& message) const {
  // Gloo's I/O messages name the far end of the pair: the peer's listening address when this
  // rank connected to it, the connection's source address when the peer connected here. The
  // first identifies the rank exactly (the next character must not be a digit, so port 4123 does
  // not match 41234); for the second, the host does when only one peer runs there.
  for (const auto& [address, peer_rank] : peer_ranks_) {
    for (size_t at = message.find(address); at != std::string::npos;
         at = message.find(address, at + 1)) {
      const size_t end = at + address.size();
      if (end == message.size() || !std::isdigit(static_cast<unsigned char>(message[end]))) {
        return absl::StrCat("rank ", peer_rank, " (", address, ")");
      }
    }
  }
  int found = -1;
  for (const auto& [address, peer_rank] : peer_ranks_) {
    // Gloo prints every address bracketed: "[10.0.0.2]:41234".
    if (absl::StrContains(message, absl::StrCat("[", HostOf(address), "]:"))) {
      if (found >= 0 && found != peer_rank) return "a peer";
      found = peer_rank;
    }
  }
  return found >= 0 ? absl::StrCat("rank ", found) : "a peer";
}

absl::Status GlooCollectives::AllReduceSum(void* data, size_t count, DType dtype) {
  RETURN_IF_ERROR(CheckUsable(dtype));
  if (count == 0 || size_ == 1) return absl::OkStatus();
  if (data == nullptr) return absl::InvalidArgumentError("AllReduceSum of a null buffer");
  const uint32_t tag = NextTag();
  return Run(absl::StrCat("allreduce of ", count, " ", DTypeName(dtype)), [&] {
    WithType(dtype, [&](auto zero) {
      using T = decltype(zero);
      gloo::AllreduceOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(absl::ToChronoMilliseconds(options_.timeout));
      opts.setOutput(static_cast<T*>(data), count);
      opts.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<T>));
      gloo::allreduce(opts);
    });
  });
}

absl::Status GlooCollectives::AllGather(const void* send, void* recv, size_t count, DType dtype) {
  RETURN_IF_ERROR(CheckUsable(dtype));
  if (count == 0) return absl::OkStatus();
  if (send == nullptr || recv == nullptr) {
    return absl::InvalidArgumentError("AllGather of a null buffer");
  }
  const size_t block = count * DTypeSize(dtype);
  char* own_block = static_cast<char*>(recv) + static_cast<size_t>(rank_) * block;
  if (size_ == 1) {
    if (send != own_block) std::memmove(own_block, send, block);
    return absl::OkStatus();
  }
  const uint32_t tag = NextTag();
  return Run(absl::StrCat("allgather of ", count, " ", DTypeName(dtype), " per rank"), [&] {
    WithType(dtype, [&](auto zero) {
      using T = decltype(zero);
      gloo::AllgatherOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(absl::ToChronoMilliseconds(options_.timeout));
      // Without an input Gloo gathers in place, from the rank's own block of the output.
      if (send != own_block) opts.setInput(static_cast<T*>(const_cast<void*>(send)), count);
      opts.setOutput(static_cast<T*>(recv), count * static_cast<size_t>(size_));
      gloo::allgather(opts);
    });
  });
}

absl::Status GlooCollectives::AllToAllV(const void* send, const std::vector<size_t>& send_counts,
                                        void* recv, const std::vector<size_t>& recv_counts,
                                        DType dtype) {
  RETURN_IF_ERROR(CheckUsable(dtype));
  const size_t n = static_cast<size_t>(size_);
  if (send_counts.size() != n || recv_counts.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV needs one count per rank (", size_,
                                                   "); got ", send_counts.size(), " send and ",
                                                   recv_counts.size(), " receive counts"));
  }
  const size_t self = static_cast<size_t>(rank_);
  if (send_counts[self] != recv_counts[self]) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllToAllV: rank ", rank_, " sends ", send_counts[self],
                     " elements to itself but expects ", recv_counts[self]));
  }
  size_t send_total = 0;
  size_t recv_total = 0;
  for (size_t p = 0; p < n; ++p) {
    send_total += send_counts[p];
    recv_total += recv_counts[p];
  }
  if ((send_total > 0 && send == nullptr) || (recv_total > 0 && recv == nullptr)) {
    return absl::InvalidArgumentError("AllToAllV of a null buffer");
  }
  const size_t element = DTypeSize(dtype);
  if (size_ == 1) {
    if (send_total > 0 && send != recv) std::memmove(recv, send, send_total * element);
    return absl::OkStatus();
  }
  std::vector<int64_t> send_elements(send_counts.begin(), send_counts.end());
  std::vector<int64_t> recv_elements(recv_counts.begin(), recv_counts.end());
  const uint32_t tag = NextTag();
  return Run(absl::StrCat("alltoallv of ", send_total, " ", DTypeName(dtype), " sent and ",
                          recv_total, " received"),
             [&] {
               WithType(dtype, [&](auto zero) {
                 using T = decltype(zero);
                 gloo::AlltoallvOptions opts(context_);
                 opts.setTag(tag);
                 opts.setTimeout(absl::ToChronoMilliseconds(options_.timeout));
                 opts.setInput(static_cast<T*>(NonNull(const_cast<void*>(send))),
                               std::move(send_elements));
                 opts.setOutput(static_cast<T*>(NonNull(recv)), std::move(recv_elements));
                 gloo::alltoallv(opts);
               });
             });
}

absl::Status GlooCollectives::Broadcast(void* data, size_t count, DType dtype, int root) {
  RETURN_IF_ERROR(CheckUsable(dtype));
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("Broadcast from rank ", root, " in a group of ", size_));
  }
  if (count == 0 || size_ == 1) return absl::OkStatus();
  if (data == nullptr) return absl::InvalidArgumentError("Broadcast of a null buffer");
  const uint32_t tag = NextTag();
  return Run(absl::StrCat("broadcast of ", count, " ", DTypeName(dtype), " from rank ", root), [&] {
    WithType(dtype, [&](auto zero) {
      using T = decltype(zero);
      gloo::BroadcastOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(absl::ToChronoMilliseconds(options_.timeout));
      opts.setOutput(static_cast<T*>(data), count);
      opts.setRoot(root);
      gloo::broadcast(opts);
    });
  });
}

absl::Status GlooCollectives::Barrier() {
  RETURN_IF_ERROR(CheckUsable(DType::kInt32));
  if (size_ == 1) return absl::OkStatus();
  const uint32_t tag = NextTag();
  return Run("barrier", [&] {
    gloo::BarrierOptions opts(context_);
    opts.setTag(tag);
    opts.setTimeout(absl::ToChronoMilliseconds(options_.timeout));
    gloo::barrier(opts);
  });
}

}  // namespace fleet::native
