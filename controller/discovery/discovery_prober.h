// DiscoveryProber: `fleet discover` and the controller's --auto-adopt loop. It probes with the
// keys of every join token that can still admit a node, lists who answered, and tells proven
// agents that have not joined yet where the controller is (ADOPT).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/trust/tokens.h"
#include "fleet/v1/controller.pb.h"

namespace fleet::controller {

struct ProberOptions {
  std::string controller_id;
  // "HOST:PORT" adopted agents connect to; empty: adoption is refused with the fix.
  std::string advertise;
  uint16_t udp_port = 7109;
  // Unicast targets probed in every auto-adopt round (the config's static node list).
  std::vector<std::string> static_targets;
  // Whether auto-adopt rounds also probe every interface (broadcast and multicast), as
  // --auto-adopt asks; a static node list alone probes only its addresses.
  bool auto_adopt_fabric = false;
};

class DiscoveryProber {
 public:
  DiscoveryProber(ProberOptions options, const TokenManager* tokens)
      : options_(std::move(options)), tokens_(tokens) {}

  // Probes as the request says (interfaces, targets, listen_for default 2 s) and adopts proven,
  // unjoined nodes when `adopt` is set.
  absl::StatusOr<v1::DiscoverResponse> Run(const v1::DiscoverRequest& request) {
    return Run(request, /*fabric=*/true);
  }

  // Sets the address adopted agents are told (once the listen port is known).
  void SetAdvertise(std::string address) {
    absl::MutexLock lock(&mu_);
    advertise_ = std::move(address);
  }

  // One round of auto-adoption: the static targets (and every interface with
  // auto_adopt_fabric), adopting what is proven.
  void AutoAdoptOnce(absl::Duration listen_for);

 private:
  // `fabric` false probes only the request's targets.
  absl::StatusOr<v1::DiscoverResponse> Run(const v1::DiscoverRequest& request, bool fabric);

  const ProberOptions options_;
  const TokenManager* const tokens_;
  absl::Mutex mu_;
  std::string advertise_ ABSL_GUARDED_BY(mu_) = options_.advertise;
};

}  // namespace fleet::controller
