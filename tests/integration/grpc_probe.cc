// grpc_probe: makes one gRPC call to a controller or an agent with the credentials it is told
// to use, and prints the status code the server (or the TLS handshake) answered. The trust
// tests run it on a host of their TestNetwork to check who may call what.
//
//   grpc_probe --address 10.0.0.1:7100 --call controller.ListNodes --credentials mtls
//       --ca ca.crt --cert admin.crt --key admin.key
//   PERMISSION_DENIED: ...
//
// Prints one line, "CODE: message" (CODE as absl::StatusCodeToString spells it), and exits 0
// whatever the code; exits 2 on a usage error.
#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/grpc_status.h"
#include "common/identity_names.h"
#include "common/transport.h"
#include "fleet/v1/agent.grpc.pb.h"
#include "fleet/v1/controller.grpc.pb.h"

namespace fleet::testing {
namespace {

// A call that reaches the server answers in milliseconds; one that cannot connect fails as soon
// as the handshake does. The deadline only bounds a server that never answers.
constexpr absl::Duration kDeadline = absl::Seconds(5);

struct Flags {
  std::string address;
  std::string call;
  std::string credentials;
  std::string ca, cert, key;
  std::string node_id;
};

absl::StatusOr<std::shared_ptr<TransportCredentials>> Credentials(const Flags& flags) {
  auto read = [](const std::string& flag, const std::string& path) -> absl::StatusOr<std::string> {
    if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is required"));
    return ReadFileToString(path);
  };
  if (flags.credentials == "plaintext") return PlaintextTransport();
  if (flags.credentials == "tls-unverified") return UnverifiedTls();
  absl::StatusOr<std::string> ca = read("--ca", flags.ca);
  if (!ca.ok()) return ca.status();
  if (flags.credentials == "tls") return ServerAuthenticatedTls(*ca);
  if (flags.credentials == "mtls") {
    absl::StatusOr<std::string> cert = read("--cert", flags.cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = read("--key", flags.key);
    if (!key.ok()) return key.status();
    return MutualTls(*ca, *key, *cert, ClientCertificates::kOptional);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--credentials ", flags.credentials, " is not one of plaintext, tls-unverified, tls, mtls"));
}

// The status of the call; a usage error is InvalidArgument and marked by `usage_error`.
absl::Status Call(const Flags& flags, bool* usage_error) {
  absl::StatusOr<std::shared_ptr<TransportCredentials>> credentials = Credentials(flags);
  if (!credentials.ok()) {
    *usage_error = true;
    return credentials.status();
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kDeadline));
  if (flags.call == "agent.Describe") {
    if (flags.node_id.empty()) {
      *usage_error = true;
      return absl::InvalidArgumentError("agent.Describe needs --node-id");
    }
    auto stub = v1::Agent::NewStub(
        MakeChannel(flags.address, **credentials, {.server_name = NodeServerName(flags.node_id)}));
    v1::DescribeRequest request;
    request.set_node_id(flags.node_id);
    v1::DescribeResponse response;
    return FromGrpc(stub->Describe(&context, request, &response));
  }
  auto stub = v1::Controller::NewStub(
      MakeChannel(flags.address, **credentials, {.server_name = kControllerServerName}));
  if (flags.call == "controller.ListNodes") {
    v1::ListNodesResponse response;
    return FromGrpc(stub->ListNodes(&context, v1::ListNodesRequest(), &response));
  }
  if (flags.call == "controller.CreateToken") {
    v1::CreateTokenRequest request;
    request.set_uses(1);
    request.set_description("grpc_probe");
    v1::CreateTokenResponse response;
    return FromGrpc(stub->CreateToken(&context, request, &response));
  }
  *usage_error = true;
  return absl::InvalidArgumentError(
      absl::StrCat("--call ", flags.call,
                   " is not one of controller.ListNodes, controller.CreateToken, agent.Describe"));
}

int Main(int argc, char** argv) {
  CLI::App app{"grpc_probe: one gRPC call with chosen credentials; prints the status code"};
  Flags flags;
  app.add_option("--address", flags.address, "server HOST:PORT")->required();
  app.add_option("--call", flags.call,
                 "controller.ListNodes, controller.CreateToken or agent.Describe")
      ->required();
  app.add_option("--credentials", flags.credentials, "plaintext, tls-unverified, tls or mtls")
      ->required();
  app.add_option("--ca", flags.ca, "CA certificate (tls, mtls)");
  app.add_option("--cert", flags.cert, "client certificate (mtls)");
  app.add_option("--key", flags.key, "client key (mtls)");
  app.add_option("--node-id", flags.node_id, "the agent's node id (agent.Describe)");
  CLI11_PARSE(app, argc, argv);

  bool usage_error = false;
  absl::Status status = Call(flags, &usage_error);
  if (usage_error) {
    std::cerr << "grpc_probe: " << status.message() << std::endl;
    return 2;
  }
  // One line, whatever the server put in its message.
  std::cout << absl::StatusCodeToString(status.code()) << ": "
            << absl::StrReplaceAll(status.message(), {{"\n", " "}}) << std::endl;
  return 0;
}

}  // namespace
}  // namespace fleet::testing

int main(int argc, char** argv) { return fleet::testing::Main(argc, argv); }
