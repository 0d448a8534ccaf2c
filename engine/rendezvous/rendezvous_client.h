// RendezvousClient: the KvStore of a fleet-engine rank that SparkFleet started. It talks to the
// controller's Rendezvous service over TLS, verifying the controller against the cluster CA and
// proving itself with its group generation's token (it has no client certificate).
//
// The agent that starts a rank gives it everything through the environment:
//   FLEET_CONTROLLER_ADDR   "HOST:PORT" of the controller (the agent's own)
//   FLEET_CONTROLLER_CA     path of the cluster CA certificate (PEM)
//   FLEET_RENDEZVOUS_TOKEN  the secret of this group generation's scope
//   FLEET_GROUP, FLEET_GENERATION, FLEET_RANK
//
// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<RendezvousClient> store, RendezvousClient::FromEnvironment());
//   if (rank == 0) RETURN_IF_ERROR(store->Set("nccl-id", id_bytes));
//   ASSIGN_OR_RETURN(std::string id, store->Get("nccl-id", absl::Now() + absl::Seconds(60)));
//
// Errors: Aborted (this rank's generation was replaced or ended: exit) and PermissionDenied
// come back at once; an unreachable controller is retried with backoff until the deadline,
// then DeadlineExceeded names its address; a key that never came is DeadlineExceeded naming it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/backoff.h"
#include "engine/rendezvous/kv_store.h"
#include "fleet/v1/rendezvous.grpc.pb.h"

namespace fleet::native {

class RendezvousClient final : public KvStore {
 public:
  struct Options {
    std::string controller;  // "HOST:PORT"
    std::string ca_pem;      // the cluster CA certificate that signed the controller's
    std::string token;       // the group generation's secret
    std::string group;
    uint64_t generation = 0;
    uint32_t rank = 0;
    // The longest one Get asks the controller to hold it (the controller caps it at 10 s):
    // a longer wait is several calls, each with its own deadline.
    absl::Duration max_wait_per_call = absl::Seconds(5);
    // Each call's deadline lies this far past its wait, for the answer to travel.
    absl::Duration call_slack = absl::Milliseconds(500);
    // How long Set (which has no deadline of its own) retries an unreachable controller.
    absl::Duration set_timeout = absl::Seconds(60);
    BackoffPolicy backoff;
  };

  // Reads the FLEET_* variables above. FailedPrecondition naming a variable that is missing
  // or malformed, or a CA file that cannot be read.
  static absl::StatusOr<std::unique_ptr<RendezvousClient>> FromEnvironment();
  // InvalidArgument when the controller address, CA or token is empty.
  static absl::StatusOr<std::unique_ptr<RendezvousClient>> Create(Options options);

  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Time deadline) override;

 private:
  explicit RendezvousClient(Options options);

  // The DeadlineExceeded to return once `deadline` passed; `last` is the last call's error.
  absl::Status GaveUp(const std::string& key, const absl::Status& last) const;

  const Options options_;
  std::unique_ptr<v1::Rendezvous::Stub> stub_;
  v1::RendezvousCaller caller_;
};

}  // namespace fleet::native
