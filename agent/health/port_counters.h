// The error counters of every RDMA port, read from sysfs for `fleet health`:
// ROOT/sys/class/infiniband/DEV/ports/N/counters/NAME (the InfiniBand port counters) and
// .../hw_counters/NAME (the driver's, e.g. mlx5's out_of_buffer). Only counters that count
// errors are read; a counter a driver does not have is left out.
//
// Example:
//   std::vector<v1::PortCounters> ports = ReadPortCounters("/");
#pragma once

#include <map>
#include <string>
#include <vector>

#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Values only; deltas are left 0 (CounterDeltas fills them). Empty when there is no
// sys/class/infiniband (no RDMA device: the node probe says so).
std::vector<v1::PortCounters> ReadPortCounters(const std::string& root);

// The change of named counters since the previous look. A counter lower than before was
// cleared (by a driver reload or `perfquery -x -R`); its change is then its value.
class CounterDeltas {
 public:
  // The change of `key` since the previous call with it; 0 the first time.
  uint64_t Delta(const std::string& key, uint64_t value);

 private:
  std::map<std::string, uint64_t> last_;
};

}  // namespace fleet::agent
