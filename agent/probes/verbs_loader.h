// libibverbs loaded at run time with dlopen, so the agent runs on nodes without rdma-core and
// never links it. Only the calls the RDMA probe needs: list devices, open one, query a port and
// a GID. Types come from <infiniband/verbs.h>; no function of that header is called directly.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fleet::agent {

// What ibv_query_port and ibv_query_gid report for one port.
struct VerbsPort {
  int state = 0;            // enum ibv_port_state: 4 is ACTIVE, as sysfs "4: ACTIVE"
  uint32_t active_mtu = 0;  // bytes
  int link_layer = 0;       // IBV_LINK_LAYER_INFINIBAND (1) or IBV_LINK_LAYER_ETHERNET (2)
  int gid_table_length = 0;
};

// A loaded libibverbs. Move-only; dlclose on destruction.
//
// Example:
//   absl::StatusOr<VerbsLibrary> verbs = VerbsLibrary::Load();
//   if (verbs.ok()) absl::StatusOr<std::vector<std::string>> names = verbs->DeviceNames();
class VerbsLibrary {
 public:
  // dlopen(`soname`) and dlsym of every entry point used. kNotFound when the library or a
  // symbol is missing, with dlerror's text.
  static absl::StatusOr<VerbsLibrary> Load(const std::string& soname = "libibverbs.so.1");

  VerbsLibrary(VerbsLibrary&& other) noexcept;
  VerbsLibrary& operator=(VerbsLibrary&& other) noexcept;
  VerbsLibrary(const VerbsLibrary&) = delete;
  VerbsLibrary& operator=(const VerbsLibrary&) = delete;
  ~VerbsLibrary();

  // Names of the devices ibv_get_device_list returns ("rocep1s0f1").
  absl::StatusOr<std::vector<std::string>> DeviceNames() const;

  // Opens `device`, queries `port` and the GIDs at `gid_indexes` (raw 16 bytes each, in order),
  // and closes it again.
  absl::StatusOr<VerbsPort> QueryPort(const std::string& device, uint8_t port,
                                      const std::vector<uint32_t>& gid_indexes,
                                      std::vector<ibv_gid>* gids) const;

 private:
  using GetDeviceListFn = ibv_device** (*)(int*);
  using FreeDeviceListFn = void (*)(ibv_device**);
  using GetDeviceNameFn = const char* (*)(ibv_device*);
  using OpenDeviceFn = ibv_context* (*)(ibv_device*);
  using CloseDeviceFn = int (*)(ibv_context*);
  // The exported ibv_query_port takes `struct _compat_ibv_port_attr*`; verbs.h passes a zeroed
  // struct ibv_port_attr cast to it, and so do we.
  using QueryPortFn = int (*)(ibv_context*, uint8_t, ibv_port_attr*);
  using QueryGidFn = int (*)(ibv_context*, uint8_t, int, ibv_gid*);

  VerbsLibrary() = default;

  void* handle_ = nullptr;
  GetDeviceListFn get_device_list_ = nullptr;
  FreeDeviceListFn free_device_list_ = nullptr;
  GetDeviceNameFn get_device_name_ = nullptr;
  OpenDeviceFn open_device_ = nullptr;
  CloseDeviceFn close_device_ = nullptr;
  QueryPortFn query_port_ = nullptr;
  QueryGidFn query_gid_ = nullptr;
};

}  // namespace fleet::agent
