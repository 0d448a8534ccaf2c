// The one object that decides how every gRPC connection in SparkFleet is secured. Servers and
// channels are built from an injected TransportCredentials; no call site makes its own.
#pragma once

#include <memory>
#include <string>

#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace fleet {

class TransportCredentials {
 public:
  virtual ~TransportCredentials() = default;
  virtual std::shared_ptr<grpc::ServerCredentials> ForServer() const = 0;
  virtual std::shared_ptr<grpc::ChannelCredentials> ForChannel() const = 0;
  // "plaintext", "mtls" — shown by `fleet nodes -o wide` and in startup logs.
  virtual std::string Describe() const = 0;
};

// No encryption and no authentication. The trust issue (mutual TLS under a cluster CA)
// replaces it everywhere; until then SparkFleet runs no command on an agent's behalf.
std::shared_ptr<TransportCredentials> PlaintextTransport();

// A channel to `address` ("HOST:PORT") with keepalive pings, so a peer whose link was cut is
// noticed in seconds rather than at the TCP timeout. `own_connection` gives the channel its own
// TCP connection instead of sharing one with other channels to the same address (the
// heartbeat benchmark uses it to simulate many agents in one process).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const TransportCredentials& credentials,
                                           bool own_connection = false);

}  // namespace fleet
