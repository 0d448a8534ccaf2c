// The Agent gRPC service: what the controller may ask of this node.
#pragma once

#include <string>

#include "fleet/v1/agent.grpc.pb.h"

namespace fleet::agent {

class AgentService final : public v1::Agent::CallbackService {
 public:
  // `facts` are re-read on every Describe from `root`.
  AgentService(v1::NodeIdentity identity, std::string root)
      : identity_(std::move(identity)), root_(std::move(root)) {}

  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* context,
                                     const v1::DescribeRequest* request,
                                     v1::DescribeResponse* response) override;

 private:
  const v1::NodeIdentity identity_;
  const std::string root_;
};

}  // namespace fleet::agent
