// DiscoveryProber: discovery probes and adoption on behalf of the controller.
#include "controller/discovery/discovery_prober.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/host_port.h"
#include "common/log.h"
#include "controller/discovery/discoverer.h"
#include "google/protobuf/util/time_util.h"

namespace fleet::controller {
namespace {

uint16_t PortOf(const std::string& address) {
  absl::StatusOr<HostPort> parsed = ParseHostPort(address);
  return parsed.ok() ? parsed->port : 0;
}

}  // namespace

absl::StatusOr<v1::DiscoverResponse> DiscoveryProber::Run(const v1::DiscoverRequest& request,
                                                          bool fabric) {
  absl::Duration listen_for =
      request.has_listen_for()
          ? absl::Nanoseconds(
                google::protobuf::util::TimeUtil::DurationToNanoseconds(request.listen_for()))
          : absl::Seconds(2);
  if (listen_for <= absl::ZeroDuration() || listen_for > absl::Seconds(30)) {
    return absl::InvalidArgumentError("discovery listens between 0 and 30 s; pass --timeout");
  }
  std::string advertise;
  {
    absl::MutexLock lock(&mu_);
    advertise = advertise_;
  }
  if (request.adopt() && advertise.empty()) {
    return absl::FailedPreconditionError(
        "cannot adopt: the controller listens on a wildcard address and so cannot tell agents "
        "where to connect; start it with --advertise HOST:PORT");
  }
  Discoverer discoverer(tokens_->DiscoveryKeys(), options_.controller_id, PortOf(advertise),
                        options_.udp_port);
  ProbeScope scope{.interfaces = {request.interfaces().begin(), request.interfaces().end()},
                   .broadcast = fabric,
                   .multicast = fabric,
                   .target_ips = {request.targets().begin(), request.targets().end()}};
  absl::StatusOr<std::vector<Found>> found = discoverer.Probe(scope, listen_for);
  if (!found.ok()) return found.status();
  v1::DiscoverResponse response;
  for (const Found& f : *found) {
    v1::DiscoveredNode* node = response.add_nodes();
    node->set_node_id(f.node_id);
    node->set_hostname(f.hostname);
    node->set_address(f.source_ip);
    node->set_agent_port(f.agent_port);
    node->set_joined(f.joined);
    node->set_proven(f.proven);
    for (const discovery::InterfaceInfo& i : f.interfaces) {
      v1::NetworkInterface* itf = node->add_interfaces();
      itf->set_name(i.name);
      itf->set_mtu(i.mtu);
      for (const std::string& a : i.addresses) itf->add_addresses(a);
    }
    for (const std::string& r : f.rdma_devices) node->add_rdma_devices(r);
    if (request.adopt() && f.proven && !f.joined) {
      absl::Status st = discoverer.Adopt(f, advertise);
      node->set_adopted(st.ok());
      if (!st.ok()) node->set_adopt_error(std::string(st.message()));
    } else if (request.adopt() && !f.proven) {
      node->set_adopt_error("unproven: it does not hold a join token of this cluster");
    }
  }
  return response;
}

void DiscoveryProber::AutoAdoptOnce(absl::Duration listen_for) {
  v1::DiscoverRequest request;
  for (const std::string& t : options_.static_targets) request.add_targets(t);
  *request.mutable_listen_for() =
      google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(listen_for));
  request.set_adopt(true);
  absl::StatusOr<v1::DiscoverResponse> result = Run(request, options_.auto_adopt_fabric);
  if (!result.ok()) {
    Log(LogLevel::kWarning, "discovery", "auto-adopt round failed",
        {{"error", result.status().message()}});
    return;
  }
  for (const v1::DiscoveredNode& n : result->nodes()) {
    if (n.adopted()) {
      Log(LogLevel::kInfo, "discovery", "adopted",
          {{"node", n.node_id()}, {"address", n.address()}});
    }
  }
}

}  // namespace fleet::controller
