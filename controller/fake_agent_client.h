// An AgentClient for unit tests: answers from a table of addresses, synchronously.
#pragma once

#include <map>
#include <string>

#include "controller/agent_client.h"

namespace fleet::controller {

class FakeAgentClient final : public AgentClient {
 public:
  // The agent at `address` answers as `node_id`.
  void AddAgent(const std::string& address, const std::string& node_id) {
    agents_[address] = node_id;
  }
  void Describe(const std::string& address, const std::string& node_id,
                DescribeCallback done) override {
    ++calls_;
    auto it = agents_.find(address);
    if (it == agents_.end()) {
      std::move(done)(absl::UnavailableError("connection refused"));
      return;
    }
    if (it->second != node_id) {
      std::move(done)(absl::FailedPreconditionError("this agent is node " + it->second));
      return;
    }
    v1::DescribeResponse response;
    response.mutable_identity()->set_node_id(node_id);
    std::move(done)(std::move(response));
  }
  int calls() const { return calls_; }

 private:
  std::map<std::string, std::string> agents_;
  int calls_ = 0;
};

}  // namespace fleet::controller
