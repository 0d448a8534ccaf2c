// The Rendezvous gRPC service.
#include "controller/grpc/rendezvous_service.h"

#include <algorithm>
#include <chrono>

#include "common/grpc_status.h"

namespace fleet::controller {
namespace {

RendezvousCaller CallerOf(const v1::RendezvousCaller& c) {
  return {.group = c.group(), .generation = c.generation(), .rank = c.rank(), .token = c.token()};
}

}  // namespace

grpc::ServerUnaryReactor* RendezvousService::Set(grpc::CallbackServerContext* context,
                                                 const v1::RendezvousSetRequest* request,
                                                 v1::RendezvousSetResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(
      ToGrpc(store_->Set(CallerOf(request->caller()), request->key(), request->value())));
  return reactor;
}

grpc::ServerUnaryReactor* RendezvousService::Get(grpc::CallbackServerContext* context,
                                                 const v1::RendezvousGetRequest* request,
                                                 v1::RendezvousGetResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time now = clock_->Now();
  absl::Time deadline = now + std::min(absl::Milliseconds(request->wait_ms()), options_.max_wait);
  // A call without a deadline reports the largest time_point.
  if (context->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(deadline, absl::FromChrono(context->deadline()) - options_.answer_margin);
  }
  store_->Get(CallerOf(request->caller()), request->key(), deadline,
              [reactor, response](absl::StatusOr<std::string> value) {
                if (value.ok()) response->set_value(*std::move(value));
                reactor->Finish(ToGrpc(value.status()));
              });
  return reactor;
}

}  // namespace fleet::controller
