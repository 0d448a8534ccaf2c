// Collectives over Gloo's TCP transport, for CPU ranks: buffers are host memory and every call
// has completed when it returns. The group finds itself through a KvStore (Gloo's rendezvous
// runs on top of it) and connects a full mesh of TCP pairs.
//
// Gloo reports failures with exceptions; they stop here and come back as Status: DeadlineExceeded
// when a peer did not answer within `GlooOptions::timeout` (a rank that never arrived, or one that
// is stuck), Unavailable when a connection broke (a peer exited), naming the peer's rank where
// Gloo's message lets us tell it. After such an error the group is broken: every later call
// returns FailedPrecondition and the caller should exit so the group can be recreated. Ranks
// that disagree on a collective's sizes are a bug, not a peer failure: Gloo's event loop thread
// may then abort the process.
//
// Example (every rank of a 2-rank group, with a store they share):
//   ASSIGN_OR_RETURN(auto comm, GlooCollectives::Create(&store, rank, 2,
//                                                       {.interface = "eth0",
//                                                        .key_prefix = "group-7/gloo/"}));
//   RETURN_IF_ERROR(comm->AllReduceSum(partial.data(), partial.size(), DType::kFloat32));
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/collectives/collectives.h"
#include "engine/rendezvous/kv_store.h"

namespace gloo {
class Context;
namespace transport {
class Device;
}  // namespace transport
}  // namespace gloo

namespace fleet::native {

struct GlooOptions {
  // Where this rank listens, exactly one of the two: a network interface (what GLOO_SOCKET_IFNAME
  // names: "lo", "eth0", "enp1s0f0np0"), whose first address is used, or a host name or address
  // to bind ("127.0.0.1", "10.0.0.2").
  std::string interface;
  std::string address;
  // Prepended to every rendezvous key, so groups (and generations of a group) sharing a store do
  // not read each other's addresses.
  std::string key_prefix = "gloo/";
  // How long to wait for the other ranks while connecting (they may start minutes apart), and
  // for each collective to complete once connected (a silent peer is a broken group).
  absl::Duration connect_timeout = absl::Seconds(60);
  absl::Duration timeout = absl::Seconds(60);
};

class GlooCollectives final : public Collectives {
 public:
  // Connects rank `rank` of a group of `size` ranks: publishes this rank's addresses under
  // options.key_prefix in `store`, waits for every other rank's and connects to each. Every rank
  // calls it with the same size, prefix and a timeout long enough for the slowest to start.
  // InvalidArgument for bad arguments, FailedPrecondition when the interface or address cannot
  // be used here, DeadlineExceeded naming the rank that never published its address, Unavailable
  // when a connection failed. A group of one connects to nobody; its collectives are copies.
  // Ignores SIGPIPE process-wide unless the program installed a handler: Gloo writes to sockets
  // with writev, which would otherwise kill the process when a peer is gone.
  static absl::StatusOr<std::unique_ptr<GlooCollectives>> Create(KvStore* store, int rank, int size,
                                                                 const GlooOptions& options);

  ~GlooCollectives() override;
  GlooCollectives(const GlooCollectives&) = delete;
  GlooCollectives& operator=(const GlooCollectives&) = delete;

  // 64-byte aligned host memory.
  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override;
  absl::Status Upload(Buffer& dst, const void* host, size_t bytes) override;
  absl::Status Download(void* host, Buffer& src, size_t bytes) override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // "gloo/tcp lo" or "gloo/tcp 10.0.0.2".
  std::string Describe() const override;

  // float32 and int32; bfloat16 is InvalidArgument (only NCCL carries it). Not thread-safe: one
  // thread issues the collectives of a rank, in the same order on every rank.
  absl::Status AllReduceSum(void* data, size_t count, DType dtype) override;
  absl::Status AllGather(const void* send, void* recv, size_t count, DType dtype) override;
  absl::Status AllToAllV(const void* send, const std::vector<size_t>& send_counts, void* recv,
                         const std::vector<size_t>& recv_counts, DType dtype) override;
  absl::Status Broadcast(void* data, size_t count, DType dtype, int root) override;
  absl::Status Barrier() override;
  // Gloo's collectives are synchronous: nothing to wait for.
  absl::Status Synchronize() override { return absl::OkStatus(); }

 private:
  GlooCollectives(int rank, int size, GlooOptions options);

  // OK when the group can still run a collective of `dtype`.
  absl::Status CheckUsable(DType dtype) const;
  // Runs one Gloo call, turning its exceptions into a Status (and breaking the group). `what`
  // names the call for the message: "allreduce of 1024 float32".
  template <typename Fn>
  absl::Status Run(const std::string& what, Fn&& fn);
  // "rank 2 ([10.0.0.3]:41234)" for the peer a Gloo message names, or "a peer".
  std::string PeerIn(const std::string& message) const;
  // The next Gloo tag: each collective gets its own, the same on every rank.
  uint32_t NextTag() { return next_tag_++; }

  const int rank_;
  const int size_;
  const GlooOptions options_;
  // Each peer's listening address as Gloo prints it ("[10.0.0.3]:41234") -> its rank.
  std::map<std::string, int> peer_ranks_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;  // null for a group of one
  uint32_t next_tag_ = 0;
  // The first collective error; once set, the group is unusable.
  absl::Status broken_;
};

}  // namespace fleet::native
