// The Rendezvous gRPC service: translates Set and Get into calls on the RendezvousStore, and
// nothing more. Callers present no client certificate; the store checks the generation's
// token. A Get waits without holding a thread: its reactor is finished by the store's callback.
#pragma once

#include "absl/time/time.h"
#include "common/clock.h"
#include "controller/rendezvous/rendezvous_store.h"
#include "fleet/v1/rendezvous.grpc.pb.h"

namespace fleet::controller {

class RendezvousService final : public v1::Rendezvous::CallbackService {
 public:
  struct Options {
    // A Get waits at most this long, whatever its wait_ms says: a client asks again.
    absl::Duration max_wait = absl::Seconds(10);
    // A Get is answered this long before its call's deadline at the latest, so the answer
    // arrives in time although the store's deadlines are kept only to within a tick.
    absl::Duration answer_margin = absl::Milliseconds(250);
  };

  RendezvousService(RendezvousStore* store, const Clock* clock, Options options)
      : store_(store), clock_(clock), options_(options) {}

  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* context,
                                const v1::RendezvousSetRequest* request,
                                v1::RendezvousSetResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context,
                                const v1::RendezvousGetRequest* request,
                                v1::RendezvousGetResponse* response) override;

 private:
  RendezvousStore* const store_;
  const Clock* const clock_;
  const Options options_;
};

}  // namespace fleet::controller
