// The network probe: every interface under ROOT/sys/class/net with its MTU, state, speed and
// addresses, marked as fabric when it backs an RDMA port.
#pragma once

#include "agent/probes/probe_context.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Appends one v1::ProbedInterface per interface to out->interfaces(), sorted by name. Call it
// after ProbeRdma: an interface is fabric when a port in out->rdma() names it as its netdev.
//
// Addresses: getifaddrs(3) on the live system. Under a recorded root, what the kernel itself
// publishes there: IPv6 from proc/net/if_inet6; IPv4 from the LOCAL host entries of
// proc/net/fib_trie, each given the interface and prefix of the longest link route in
// proc/net/route that holds it (127.0.0.0/8 goes to the loopback interface, whose routes live
// in the kernel's local table that proc/net/route does not show). What cannot be placed is
// reported in out->unavailable().
//
// Example:
//   ProbeRdma(ctx, &probe);
//   ProbeNetwork(ctx, &probe);
void ProbeNetwork(const ProbeContext& ctx, v1::NodeProbe* out);

}  // namespace fleet::agent
