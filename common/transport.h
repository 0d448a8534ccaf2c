// The one object that decides how every gRPC connection in SparkFleet is secured. Servers and
// channels are built from an injected TransportCredentials; no call site makes its own.
#pragma once

#include <memory>
#include <string>

#include "absl/time/time.h"
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

// No encryption and no authentication: for unit tests only. Every daemon and the CLI use
// mutual TLS under the cluster CA.
std::shared_ptr<TransportCredentials> PlaintextTransport();

enum class ClientCertificates {
  kOptional,  // verified when presented (the controller: agents without one may only join)
  kRequired,  // the agent: only the controller may call it
};

// Mutual TLS from PEM text held in memory (the controller's own certificate, the CLI's admin
// credential). Channels present `cert_pem` and verify the server against `ca_pem`.
std::shared_ptr<TransportCredentials> MutualTls(const std::string& ca_pem,
                                                const std::string& key_pem,
                                                const std::string& cert_pem,
                                                ClientCertificates client_certificates);

// Mutual TLS from files that are re-read every `refresh` when they change, so a renewed
// certificate takes effect without a restart. Replace the files atomically (a renamed
// directory or symlink), never one by one.
std::shared_ptr<TransportCredentials> MutualTlsFromFiles(const std::string& ca_path,
                                                         const std::string& key_path,
                                                         const std::string& cert_path,
                                                         ClientCertificates client_certificates,
                                                         absl::Duration refresh);

// TLS that verifies the server against `ca_pem` and presents no client certificate: an agent's
// join call, before it has a certificate. Channels only.
std::shared_ptr<TransportCredentials> ServerAuthenticatedTls(const std::string& ca_pem);

// TLS that does not verify the server at all. Only for fetching the cluster CA certificate,
// whose SHA-256 the caller then checks against the join token before sending anything.
// Channels only.
std::shared_ptr<TransportCredentials> UnverifiedTls();

struct ChannelOptions {
  // The DNS name the server's certificate must carry (identity_names.h). Ignored in plaintext.
  std::string server_name;
  // Its own TCP connection instead of one shared with other channels to the same address (the
  // heartbeat benchmark simulates many agents in one process).
  bool own_connection = false;
};

// A channel to `address` ("HOST:PORT") with keepalive pings, so a peer whose link was cut is
// noticed in seconds rather than at the TCP timeout, and quick reconnects.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const TransportCredentials& credentials,
                                           const ChannelOptions& options = {});

}  // namespace fleet
