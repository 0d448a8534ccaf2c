// Transport credentials and channel construction.
#include "common/transport.h"

#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/channel_arguments.h"

namespace fleet {
namespace {

namespace gx = grpc::experimental;

class Plaintext final : public TransportCredentials {
 public:
  std::shared_ptr<grpc::ServerCredentials> ForServer() const override {
    return grpc::InsecureServerCredentials();
  }
  std::shared_ptr<grpc::ChannelCredentials> ForChannel() const override {
    return grpc::InsecureChannelCredentials();
  }
  std::string Describe() const override { return "plaintext"; }
};

// TLS through gRPC's certificate providers: one provider feeds both the server and the channel
// side. Without identity (`has_identity` false) it is channel-only; without a provider it is
// channel-only and verifies nothing.
class Tls final : public TransportCredentials {
 public:
  Tls(std::shared_ptr<gx::CertificateProviderInterface> provider, bool has_identity,
      bool verify_server, ClientCertificates client_certificates, std::string description)
      : provider_(std::move(provider)),
        has_identity_(has_identity),
        verify_server_(verify_server),
        client_certificates_(client_certificates),
        description_(std::move(description)) {}

  std::shared_ptr<grpc::ServerCredentials> ForServer() const override {
    gx::TlsServerCredentialsOptions options(provider_);
    options.watch_root_certs();
    options.watch_identity_key_cert_pairs();
    options.set_cert_request_type(client_certificates_ == ClientCertificates::kRequired
                                      ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    return grpc::experimental::TlsServerCredentials(options);
  }

  std::shared_ptr<grpc::ChannelCredentials> ForChannel() const override {
    gx::TlsChannelCredentialsOptions options;
    if (provider_ != nullptr) options.set_certificate_provider(provider_);
    if (verify_server_) {
      options.watch_root_certs();
    } else {
      options.set_verify_server_certs(false);
      options.set_certificate_verifier(std::make_shared<gx::NoOpCertificateVerifier>());
      options.set_check_call_host(false);
    }
    if (has_identity_) options.watch_identity_key_cert_pairs();
    return grpc::experimental::TlsCredentials(options);
  }

  std::string Describe() const override { return description_; }

 private:
  const std::shared_ptr<gx::CertificateProviderInterface> provider_;
  const bool has_identity_;
  const bool verify_server_;
  const ClientCertificates client_certificates_;
  const std::string description_;
};

}  // namespace

std::shared_ptr<TransportCredentials> PlaintextTransport() {
  static const auto* instance = new std::shared_ptr<TransportCredentials>(new Plaintext());
  return *instance;
}

std::shared_ptr<TransportCredentials> MutualTls(const std::string& ca_pem,
                                                const std::string& key_pem,
                                                const std::string& cert_pem,
                                                ClientCertificates client_certificates) {
  auto provider = std::make_shared<gx::StaticDataCertificateProvider>(
      ca_pem, std::vector<gx::IdentityKeyCertPair>{{key_pem, cert_pem}});
  return std::make_shared<Tls>(provider, true, true, client_certificates, "mtls");
}

std::shared_ptr<TransportCredentials> MutualTlsFromFiles(const std::string& ca_path,
                                                         const std::string& key_path,
                                                         const std::string& cert_path,
                                                         ClientCertificates client_certificates,
                                                         absl::Duration refresh) {
  auto provider = std::make_shared<gx::FileWatcherCertificateProvider>(
      key_path, cert_path, ca_path,
      static_cast<unsigned>(std::max<int64_t>(1, absl::ToInt64Seconds(refresh))));
  return std::make_shared<Tls>(provider, true, true, client_certificates, "mtls");
}

std::shared_ptr<TransportCredentials> ServerAuthenticatedTls(const std::string& ca_pem) {
  auto provider = std::make_shared<gx::StaticDataCertificateProvider>(ca_pem);
  return std::make_shared<Tls>(provider, false, true, ClientCertificates::kOptional,
                               "tls-server-authenticated");
}

std::shared_ptr<TransportCredentials> UnverifiedTls() {
  // No provider: the channel neither verifies nor presents certificates (gRPC aborts on a
  // provider with nothing in it).
  return std::make_shared<Tls>(nullptr, false, false, ClientCertificates::kOptional,
                               "tls-unverified");
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const TransportCredentials& credentials,
                                           const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
  // Reconnect quickly after the controller comes back; gRPC's default backoff reaches 120 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2'000);
  // gRPC also uses this as the time one connection attempt may take (handshakes included); at
  // 200 ms a controller that stalls for a moment, or a long round trip, failed every call.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5'000);
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!options.server_name.empty()) {
    args.SetSslTargetNameOverride(options.server_name);
  }
  return grpc::CreateCustomChannel(address, credentials.ForChannel(), args);
}

}  // namespace fleet
