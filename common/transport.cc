// Transport credentials and channel construction.
#include "common/transport.h"

#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace fleet {
namespace {

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

}  // namespace

std::shared_ptr<TransportCredentials> PlaintextTransport() {
  static const auto* instance = new std::shared_ptr<TransportCredentials>(new Plaintext());
  return *instance;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const TransportCredentials& credentials,
                                           bool own_connection) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
  // Reconnect quickly after the controller comes back; gRPC's default backoff reaches 120 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2'000);
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, credentials.ForChannel(), args);
}

}  // namespace fleet
