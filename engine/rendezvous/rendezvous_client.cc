// RendezvousClient: Set and Get against the controller's Rendezvous service, with retries.
#include "engine/rendezvous/rendezvous_client.h"

#include <stdlib.h>

#include <algorithm>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"
#include "common/transport.h"
#include "grpcpp/client_context.h"

namespace fleet::native {
namespace {

// The message the controller's own DeadlineExceeded carries; gRPC's says "Deadline Exceeded".
constexpr absl::string_view kNotSetMarker = "rendezvous key '";

absl::Status MissingVariable(absl::string_view name, absl::string_view why) {
  return absl::FailedPreconditionError(absl::StrCat(
      name, " ", why,
      ": fleet-engine must be started by a SparkFleet agent for a group of engine `native` "
      "(the agent and the controller set FLEET_CONTROLLER_ADDR, FLEET_CONTROLLER_CA, "
      "FLEET_RENDEZVOUS_TOKEN, FLEET_GROUP, FLEET_GENERATION and FLEET_RANK), or by a test "
      "that sets them"));
}

absl::StatusOr<std::string> Variable(const char* name) {
  const char* value = ::getenv(name);
  if (value == nullptr || *value == '\0') return MissingVariable(name, "is not set");
  return std::string(value);
}

// Errors that a later attempt may not see: the controller is away, restarting or slow.
bool Retryable(const absl::Status& st) {
  return absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st);
}

void SleepUntil(absl::Time until) {
  absl::Duration d = until - absl::Now();
  if (d > absl::ZeroDuration()) std::this_thread::sleep_for(absl::ToChronoNanoseconds(d));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::FromEnvironment() {
  Options options;
  absl::StatusOr<std::string> v = Variable("FLEET_CONTROLLER_ADDR");
  if (!v.ok()) return v.status();
  options.controller = *std::move(v);
  v = Variable("FLEET_CONTROLLER_CA");
  if (!v.ok()) return v.status();
  absl::StatusOr<std::string> ca = ReadFileToString(*v);
  if (!ca.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "FLEET_CONTROLLER_CA names ", *v, ", which cannot be read (", ca.status().message(),
        "); the agent points it at its cluster CA certificate, mounted into containers at the "
        "same path"));
  }
  options.ca_pem = *std::move(ca);
  v = Variable("FLEET_RENDEZVOUS_TOKEN");
  if (!v.ok()) return v.status();
  options.token = *std::move(v);
  v = Variable("FLEET_GROUP");
  if (!v.ok()) return v.status();
  options.group = *std::move(v);
  v = Variable("FLEET_GENERATION");
  if (!v.ok()) return v.status();
  if (!absl::SimpleAtoi(*v, &options.generation)) {
    return MissingVariable("FLEET_GENERATION", absl::StrCat("is \"", *v, "\", not a number"));
  }
  v = Variable("FLEET_RANK");
  if (!v.ok()) return v.status();
  if (!absl::SimpleAtoi(*v, &options.rank)) {
    return MissingVariable("FLEET_RANK", absl::StrCat("is \"", *v, "\", not a number"));
  }
  return Create(std::move(options));
}

absl::StatusOr<std::unique_ptr<RendezvousClient>> RendezvousClient::Create(Options options) {
  if (options.controller.empty() || options.ca_pem.empty() || options.token.empty()) {
    return absl::InvalidArgumentError(
        "a rendezvous client needs the controller's address, the cluster CA and a token");
  }
  return std::unique_ptr<RendezvousClient>(new RendezvousClient(std::move(options)));
}

RendezvousClient::RendezvousClient(Options options) : options_(std::move(options)) {
  stub_ = v1::Rendezvous::NewStub(MakeChannel(options_.controller,
                                              *ServerAuthenticatedTls(options_.ca_pem),
                                              {.server_name = kControllerServerName}));
  caller_.set_group(options_.group);
  caller_.set_generation(options_.generation);
  caller_.set_rank(options_.rank);
  caller_.set_token(options_.token);
}

absl::Status RendezvousClient::GaveUp(const std::string& key, const absl::Status& last) const {
  if (absl::IsDeadlineExceeded(last) && absl::StrContains(last.message(), kNotSetMarker)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "rendezvous key '", key, "' of group ", options_.group, " generation ", options_.generation,
        " was not set before the deadline (controller ", options_.controller,
        "); did rank 0 start? `fleet logs ", options_.group, " --rank 0` shows it"));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("the controller at ", options_.controller,
                   " did not answer before the deadline (rank ", options_.rank, " of group ",
                   options_.group, ", rendezvous key '", key, "'): ", last.message()));
}

absl::Status RendezvousClient::Set(const std::string& key, const std::string& value) {
  v1::RendezvousSetRequest request;
  *request.mutable_caller() = caller_;
  request.set_key(key);
  request.set_value(value);
  const absl::Time deadline = absl::Now() + options_.set_timeout;
  Backoff backoff(options_.backoff, std::random_device{}());
  absl::Status last;
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(std::min(deadline, absl::Now() + options_.max_wait_per_call)));
    v1::RendezvousSetResponse response;
    last = FromGrpc(stub_->Set(&context, request, &response));
    if (last.ok() || !Retryable(last)) return last;
    absl::Time next = absl::Now() + backoff.Next();
    if (next >= deadline) return GaveUp(key, last);
    SleepUntil(next);
  }
}

absl::StatusOr<std::string> RendezvousClient::Get(const std::string& key, absl::Time deadline) {
  v1::RendezvousGetRequest request;
  *request.mutable_caller() = caller_;
  request.set_key(key);
  Backoff backoff(options_.backoff, std::random_device{}());
  absl::Status last;
  while (true) {
    const absl::Time now = absl::Now();
    // The first call goes out even past the deadline: a key already there is still answered.
    if (now >= deadline && !last.ok()) return GaveUp(key, last);
    const absl::Duration wait =
        std::clamp(deadline - now, absl::ZeroDuration(), options_.max_wait_per_call);
    request.set_wait_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(wait)));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(now + wait + options_.call_slack));
    v1::RendezvousGetResponse response;
    last = FromGrpc(stub_->Get(&context, request, &response));
    if (last.ok()) return std::move(*response.mutable_value());
    if (!Retryable(last)) return last;
    if (absl::IsDeadlineExceeded(last)) {
      // The controller (or the call's own deadline) already made us wait: ask again at once.
      backoff.Reset();
      continue;
    }
    // Unreachable: wait before the next attempt, but never past the deadline.
    SleepUntil(std::min(deadline, absl::Now() + backoff.Next()));
  }
}

}  // namespace fleet::native
