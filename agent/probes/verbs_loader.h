// libibverbs loaded at run time with dlopen, so the agent runs on nodes without rdma-core and
// never links it. The calls the RDMA probe needs (list devices, open one, query a port and a
// GID) and those of the RDMA fabric test (agent/fabric/verbs_device_impl.cc). Types come from
// <infiniband/verbs.h>; no exported function of that header is called directly (its inline
// ibv_post_send and ibv_poll_cq call through the context's ops and need no symbol).
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

  // ibv_open_device of the device named `device`: NotFound naming the devices there are, or
  // errno's Status of ibv_open_device. The caller closes it with CloseDevice.
  absl::StatusOr<ibv_context*> OpenDevice(const std::string& device) const;
  void CloseDevice(ibv_context* context) const { close_device_(context); }
  // ibv_query_port as verbs.h's inline ___ibv_query_port does it; 0 or an errno value.
  int QueryPortAttr(ibv_context* context, uint8_t port, ibv_port_attr* attr) const;
  int QueryGid(ibv_context* context, uint8_t port, int index, ibv_gid* gid) const {
    return query_gid_(context, port, index, gid);
  }

  // Entry points of the RDMA fabric test, resolved by Load with the others.
  struct DataPath {
    ibv_pd* (*alloc_pd)(ibv_context*) = nullptr;
    int (*dealloc_pd)(ibv_pd*) = nullptr;
    ibv_mr* (*reg_mr)(ibv_pd*, void*, size_t, int) = nullptr;
    int (*dereg_mr)(ibv_mr*) = nullptr;
    ibv_cq* (*create_cq)(ibv_context*, int, void*, ibv_comp_channel*, int) = nullptr;
    int (*destroy_cq)(ibv_cq*) = nullptr;
    ibv_qp* (*create_qp)(ibv_pd*, ibv_qp_init_attr*) = nullptr;
    int (*destroy_qp)(ibv_qp*) = nullptr;
    int (*modify_qp)(ibv_qp*, ibv_qp_attr*, int) = nullptr;
    const char* (*wc_status_str)(ibv_wc_status) = nullptr;
  };
  const DataPath& data_path() const { return data_path_; }

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
  DataPath data_path_;
};

}  // namespace fleet::agent
