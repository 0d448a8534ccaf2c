// libibverbs through dlopen: the few entry points the RDMA probe calls.
#include "agent/probes/verbs_loader.h"

#include <dlfcn.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

// dlsym's result as a typed function pointer; kNotFound naming the symbol when it is absent.
template <typename Fn>
absl::Status Resolve(void* handle, const char* name, const std::string& soname, Fn* fn) {
  ::dlerror();
  void* symbol = ::dlsym(handle, name);
  if (symbol == nullptr) {
    const char* error = ::dlerror();
    return absl::NotFoundError(
        absl::StrCat(soname, " has no ", name, ": ", error != nullptr ? error : "null symbol"));
  }
  *fn = reinterpret_cast<Fn>(symbol);
  return absl::OkStatus();
}

// ibv_* calls return an errno value, or -1 with errno set.
std::string VerbsError(int rc) { return std::strerror(rc > 0 ? rc : errno); }

uint32_t MtuBytes(ibv_mtu mtu) {
  // enum ibv_mtu: IBV_MTU_256 = 1 ... IBV_MTU_4096 = 5.
  return mtu >= IBV_MTU_256 && mtu <= IBV_MTU_4096 ? 128u << mtu : 0;
}

}  // namespace

absl::StatusOr<VerbsLibrary> VerbsLibrary::Load(const std::string& soname) {
  VerbsLibrary lib;
  lib.handle_ = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib.handle_ == nullptr) {
    const char* error = ::dlerror();
    return absl::NotFoundError(
        absl::StrCat("dlopen ", soname, ": ", error != nullptr ? error : "failed"));
  }
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_get_device_list", soname, &lib.get_device_list_));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_free_device_list", soname, &lib.free_device_list_));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_get_device_name", soname, &lib.get_device_name_));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_open_device", soname, &lib.open_device_));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_close_device", soname, &lib.close_device_));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_query_port", soname, &lib.query_port_));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_query_gid", soname, &lib.query_gid_));
  DataPath& d = lib.data_path_;
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_alloc_pd", soname, &d.alloc_pd));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_dealloc_pd", soname, &d.dealloc_pd));
  // verbs.h makes ibv_reg_mr a macro over __ibv_reg_mr; the exported ibv_reg_mr is the plain
  // call it falls back to.
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_reg_mr", soname, &d.reg_mr));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_dereg_mr", soname, &d.dereg_mr));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_create_cq", soname, &d.create_cq));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_destroy_cq", soname, &d.destroy_cq));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_create_qp", soname, &d.create_qp));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_destroy_qp", soname, &d.destroy_qp));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_modify_qp", soname, &d.modify_qp));
  RETURN_IF_ERROR(Resolve(lib.handle_, "ibv_wc_status_str", soname, &d.wc_status_str));
  return lib;
}

VerbsLibrary::VerbsLibrary(VerbsLibrary&& other) noexcept { *this = std::move(other); }

VerbsLibrary& VerbsLibrary::operator=(VerbsLibrary&& other) noexcept {
  if (this == &other) return *this;
  if (handle_ != nullptr) ::dlclose(handle_);
  handle_ = std::exchange(other.handle_, nullptr);
  get_device_list_ = other.get_device_list_;
  free_device_list_ = other.free_device_list_;
  get_device_name_ = other.get_device_name_;
  open_device_ = other.open_device_;
  close_device_ = other.close_device_;
  query_port_ = other.query_port_;
  query_gid_ = other.query_gid_;
  data_path_ = other.data_path_;
  return *this;
}

VerbsLibrary::~VerbsLibrary() {
  if (handle_ != nullptr) ::dlclose(handle_);
}

absl::StatusOr<std::vector<std::string>> VerbsLibrary::DeviceNames() const {
  int count = 0;
  ibv_device** list = get_device_list_(&count);
  if (list == nullptr) return ErrnoStatus("ibv_get_device_list");
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.emplace_back(get_device_name_(list[i]));
  free_device_list_(list);
  return names;
}

absl::StatusOr<ibv_context*> VerbsLibrary::OpenDevice(const std::string& device) const {
  int count = 0;
  ibv_device** list = get_device_list_(&count);
  if (list == nullptr && errno == ENOSYS) {
    // libibverbs finds no /sys/class/infiniband_verbs: the kernel offers no verbs devices.
    return absl::FailedPreconditionError(absl::StrCat(
        "ibv_get_device_list: ", std::strerror(ENOSYS), ": the kernel offers no verbs devices, so ",
        device,
        " cannot be opened; load the verbs module (modprobe ib_uverbs) where an RDMA device "
        "exists"));
  }
  if (list == nullptr) return ErrnoStatus("ibv_get_device_list");
  ibv_context* context = nullptr;
  bool found = false;
  std::vector<std::string> names;
  for (int i = 0; i < count && !found; ++i) {
    names.emplace_back(get_device_name_(list[i]));
    if (device != names.back()) continue;
    found = true;
    context = open_device_(list[i]);
  }
  int open_errno = errno;
  free_device_list_(list);
  if (!found) {
    return absl::NotFoundError(absl::StrCat("ibv_get_device_list has no ", device, " (it lists ",
                                            names.empty() ? "none" : absl::StrJoin(names, ", "),
                                            ")"));
  }
  if (context == nullptr) return ErrnoStatus(absl::StrCat("ibv_open_device ", device), open_errno);
  return context;
}

int VerbsLibrary::QueryPortAttr(ibv_context* context, uint8_t port, ibv_port_attr* attr) const {
  // What verbs.h's inline ___ibv_query_port does: the provider's extended query_port when its
  // verbs_context is large enough to hold one, else the exported compat ibv_query_port.
  std::memset(attr, 0, sizeof *attr);
  verbs_context* vctx = verbs_get_ctx(context);
  bool extended = vctx != nullptr &&
                  vctx->sz >= sizeof(*vctx) - offsetof(verbs_context, query_port) &&
                  vctx->query_port != nullptr;
  return extended ? vctx->query_port(context, port, attr, sizeof *attr)
                  : query_port_(context, port, attr);
}

absl::StatusOr<VerbsPort> VerbsLibrary::QueryPort(const std::string& device, uint8_t port,
                                                  const std::vector<uint32_t>& gid_indexes,
                                                  std::vector<ibv_gid>* gids) const {
  ASSIGN_OR_RETURN(ibv_context * context, OpenDevice(device));
  ibv_port_attr attr;
  int rc = QueryPortAttr(context, port, &attr);
  absl::Status status;
  if (rc != 0) {
    status = absl::UnavailableError(
        absl::StrCat("ibv_query_port ", device, " port ", port, ": ", VerbsError(rc)));
  }
  gids->clear();
  for (uint32_t index : gid_indexes) {
    if (!status.ok()) break;
    ibv_gid gid;
    std::memset(&gid, 0, sizeof gid);
    rc = query_gid_(context, port, static_cast<int>(index), &gid);
    if (rc != 0) {
      status = absl::UnavailableError(absl::StrCat("ibv_query_gid ", device, " port ", port,
                                                   " index ", index, ": ", VerbsError(rc)));
    }
    gids->push_back(gid);
  }
  close_device_(context);
  if (!status.ok()) return status;
  return VerbsPort{.state = attr.state,
                   .active_mtu = MtuBytes(attr.active_mtu),
                   .link_layer = attr.link_layer,
                   .gid_table_length = attr.gid_tbl_len};
}

}  // namespace fleet::agent
