// VerbsDevices over the dlopen'd libibverbs (agent/probes/verbs_loader.h): the real devices of
// the RDMA fabric test. libibverbs is loaded on the first Open, so an agent on a node without
// rdma-core starts and answers RDMA tests with a clear error instead.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "agent/fabric/verbs_device.h"
#include "agent/probes/verbs_loader.h"

namespace fleet::agent {

// Example:
//   VerbsDevicesImpl devices;
//   ASSIGN_OR_RETURN(std::unique_ptr<VerbsContext> context, devices.Open("rocep1s0f1"));
class VerbsDevicesImpl final : public VerbsDevices {
 public:
  explicit VerbsDevicesImpl(std::string soname = "libibverbs.so.1") : soname_(std::move(soname)) {}
  absl::StatusOr<std::unique_ptr<VerbsContext>> Open(const std::string& device) override;

 private:
  const std::string soname_;
  absl::Mutex mu_;
  // Loaded once and kept for the agent's life: contexts hold its function pointers.
  std::shared_ptr<const VerbsLibrary> library_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
