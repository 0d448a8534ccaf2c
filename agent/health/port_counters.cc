// ReadPortCounters and CounterDeltas (see port_counters.h).
#include "agent/health/port_counters.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/probes/root_files.h"

namespace fleet::agent {
namespace {

// IBTA port counters (counters/) and mlx5's RoCE error counters (hw_counters/), as the kernel
// names them. Traffic and congestion counters are left out: they grow on a healthy link.
constexpr const char* kPortErrorCounters[] = {
    "symbol_error",
    "link_downed",
    "link_error_recovery",
    "port_rcv_errors",
    "port_rcv_remote_physical_errors",
    "port_rcv_switch_relay_errors",
    "port_xmit_discards",
    "port_xmit_constraint_errors",
    "port_rcv_constraint_errors",
    "local_link_integrity_errors",
    "excessive_buffer_overrun_errors",
};
constexpr const char* kHwErrorCounters[] = {
    "out_of_buffer",
    "out_of_sequence",
    "packet_seq_err",
    "local_ack_timeout_err",
    "rnr_nak_retry_err",
    "implied_nak_seq_err",
    "req_cqe_error",
    "resp_cqe_error",
    "req_remote_access_errors",
    "req_remote_invalid_request",
    "resp_local_length_error",
    "rx_icrc_encapsulated",
};

std::vector<std::string> SortedEntries(const std::string& dir, std::error_code& ec) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

void ReadCounters(const std::string& dir, const auto& names, v1::PortCounters& port,
                  std::string& unreadable) {
  for (const char* name : names) {
    absl::StatusOr<std::string> text = ReadTrimmed(absl::StrCat(dir, "/", name));
    if (!text.ok()) continue;  // this driver does not have it
    uint64_t value = 0;
    if (!absl::SimpleAtoi(*text, &value)) {
      unreadable = absl::StrCat(dir, "/", name, " holds \"", *text, "\", not a number");
      continue;
    }
    v1::PortCounter& c = *port.add_counters();
    c.set_name(name);
    c.set_value(value);
  }
}

}  // namespace

std::vector<v1::PortCounters> ReadPortCounters(const std::string& root) {
  std::vector<v1::PortCounters> out;
  const std::string class_dir = Under(root, "/sys/class/infiniband");
  std::error_code ec;
  std::vector<std::string> devices = SortedEntries(class_dir, ec);
  if (ec) return out;
  for (const std::string& device : devices) {
    const std::string ports_dir = absl::StrCat(class_dir, "/", device, "/ports");
    std::vector<std::string> ports = SortedEntries(ports_dir, ec);
    if (ec) {
      v1::PortCounters& port = out.emplace_back();
      port.set_device(device);
      port.set_error(absl::StrCat(ports_dir, ": ", ec.message()));
      continue;
    }
    for (const std::string& number : ports) {
      uint32_t n = 0;
      if (!absl::SimpleAtoi(number, &n)) continue;
      v1::PortCounters& port = out.emplace_back();
      port.set_device(device);
      port.set_port(n);
      const std::string port_dir = absl::StrCat(ports_dir, "/", number);
      std::string unreadable;
      ReadCounters(port_dir + "/counters", kPortErrorCounters, port, unreadable);
      ReadCounters(port_dir + "/hw_counters", kHwErrorCounters, port, unreadable);
      if (!unreadable.empty()) {
        port.set_error(unreadable);
      } else if (port.counters().empty()) {
        port.set_error(absl::StrCat("no error counter under ", port_dir,
                                    "/counters or hw_counters (the driver exposes none)"));
      }
    }
  }
  return out;
}

uint64_t CounterDeltas::Delta(const std::string& key, uint64_t value) {
  auto [it, first] = last_.try_emplace(key, value);
  if (first) return 0;
  const uint64_t before = it->second;
  it->second = value;
  return value >= before ? value - before : value;
}

}  // namespace fleet::agent
