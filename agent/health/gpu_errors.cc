// NvmlGpuErrors: ECC counters and XID events through a dlopen()ed NVML.
#include "agent/health/gpu_errors.h"

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/probes/dynamic_library.h"

namespace fleet::agent {
namespace {

// The NVML types and constants used here, mirroring nvml.h (not installed on build machines).
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
using nvmlEventSet_t = struct nvmlEventSet_st*;
struct nvmlEventData_t {
  nvmlDevice_t device;
  unsigned long long eventType;
  unsigned long long eventData;  // the XID for nvmlEventTypeXidCriticalError
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr nvmlReturn_t kNvmlErrorTimeout = 10;              // NVML_ERROR_TIMEOUT
constexpr unsigned long long kEventXidCriticalError = 0x8;  // nvmlEventTypeXidCriticalError
constexpr int kEccCorrected = 0;                            // NVML_MEMORY_ERROR_TYPE_CORRECTED
constexpr int kEccUncorrected = 1;                          // NVML_MEMORY_ERROR_TYPE_UNCORRECTED
constexpr int kEccVolatile = 0;                             // NVML_VOLATILE_ECC
// More events than this between two reads are dropped (and counted as dropped): a GPU that
// raises thousands of XIDs is already unhealthy, and a read stays bounded.
constexpr int kMaxEventsPerRead = 256;

struct NvmlCalls {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  const char* (*error_string)(nvmlReturn_t);
  nvmlReturn_t (*count)(unsigned int*);
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*);
  nvmlReturn_t (*ecc_total)(nvmlDevice_t, int, int, unsigned long long*);
  nvmlReturn_t (*event_set_create)(nvmlEventSet_t*);
  nvmlReturn_t (*register_events)(nvmlDevice_t, unsigned long long, nvmlEventSet_t);
  nvmlReturn_t (*event_set_wait)(nvmlEventSet_t, nvmlEventData_t*, unsigned int);
  nvmlReturn_t (*event_set_free)(nvmlEventSet_t);

  std::string Error(nvmlReturn_t code) const {
    const char* text = error_string(code);
    return text != nullptr ? std::string(text) : absl::StrCat("NVML error ", code);
  }
};

class NvmlGpuErrors final : public GpuErrorSource {
 public:
  NvmlGpuErrors() {
    absl::StatusOr<DynamicLibrary> lib = DynamicLibrary::Create({"libnvidia-ml.so.1"});
    if (!lib.ok()) return;  // no driver: the node probe says so
    lib_.emplace(*std::move(lib));
    std::string missing;
    auto resolve = [&](auto& fn, const char* symbol) {
      fn = lib_->Symbol<std::remove_reference_t<decltype(fn)>>(symbol);
      if (fn == nullptr && missing.empty()) missing = symbol;
    };
    resolve(nvml_.init, "nvmlInit_v2");
    resolve(nvml_.shutdown, "nvmlShutdown");
    resolve(nvml_.error_string, "nvmlErrorString");
    resolve(nvml_.count, "nvmlDeviceGetCount_v2");
    resolve(nvml_.handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
    resolve(nvml_.ecc_total, "nvmlDeviceGetTotalEccErrors");
    resolve(nvml_.event_set_create, "nvmlEventSetCreate");
    resolve(nvml_.register_events, "nvmlDeviceRegisterEvents");
    resolve(nvml_.event_set_wait, "nvmlEventSetWait_v2");
    resolve(nvml_.event_set_free, "nvmlEventSetFree");
    if (!missing.empty()) {
      broken_ = absl::StrCat(lib_->name(), " lacks ", missing);
      return;
    }
    if (nvmlReturn_t rc = nvml_.init(); rc != kNvmlSuccess) {
      broken_ = absl::StrCat("nvmlInit_v2: ", nvml_.Error(rc));
      return;
    }
    initialized_ = true;
    unsigned int count = 0;
    if (nvmlReturn_t rc = nvml_.count(&count); rc != kNvmlSuccess) {
      broken_ = absl::StrCat("nvmlDeviceGetCount_v2: ", nvml_.Error(rc));
      return;
    }
    if (nvmlReturn_t rc = nvml_.event_set_create(&events_); rc != kNvmlSuccess) {
      events_ = nullptr;
      xid_broken_ = absl::StrCat("nvmlEventSetCreate: ", nvml_.Error(rc));
    }
    for (unsigned int i = 0; i < count; ++i) {
      Device& d = devices_.emplace_back();
      d.index = i;
      if (nvmlReturn_t rc = nvml_.handle_by_index(i, &d.handle); rc != kNvmlSuccess) {
        d.handle = nullptr;
        d.why = absl::StrCat("nvmlDeviceGetHandleByIndex_v2: ", nvml_.Error(rc));
        continue;
      }
      if (events_ == nullptr) {
        d.xid_why = xid_broken_;
      } else if (nvmlReturn_t rc = nvml_.register_events(d.handle, kEventXidCriticalError, events_);
                 rc != kNvmlSuccess) {
        d.xid_why = absl::StrCat("nvmlDeviceRegisterEvents: ", nvml_.Error(rc));
      }
    }
  }

  ~NvmlGpuErrors() override {
    if (events_ != nullptr) nvml_.event_set_free(events_);
    if (initialized_) nvml_.shutdown();
  }

  std::vector<v1::GpuErrors> Read() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::GpuErrors> out;
    if (!lib_.has_value()) return out;
    if (!broken_.empty()) {
      // NVML is there but unusable: one line says why instead of any figure.
      v1::GpuErrors& e = out.emplace_back();
      e.set_ecc_unavailable(broken_);
      e.set_xid_unavailable(broken_);
      return out;
    }
    std::vector<std::vector<uint64_t>> xids(devices_.size());
    int dropped = 0;
    std::string wait_error;
    if (events_ != nullptr) {
      for (int n = 0;; ++n) {
        nvmlEventData_t data{};
        nvmlReturn_t rc = nvml_.event_set_wait(events_, &data, 0);
        if (rc == kNvmlErrorTimeout) break;  // none left
        if (rc != kNvmlSuccess) {
          wait_error = absl::StrCat("nvmlEventSetWait_v2: ", nvml_.Error(rc));
          break;
        }
        if (n >= kMaxEventsPerRead) {
          ++dropped;
          continue;
        }
        for (size_t i = 0; i < devices_.size(); ++i) {
          if (devices_[i].handle == data.device) xids[i].push_back(data.eventData);
        }
      }
    }
    for (size_t i = 0; i < devices_.size(); ++i) {
      const Device& d = devices_[i];
      v1::GpuErrors& e = out.emplace_back();
      e.set_index(d.index);
      if (d.handle == nullptr) {
        e.set_ecc_unavailable(d.why);
        e.set_xid_unavailable(d.why);
        continue;
      }
      unsigned long long corrected = 0;
      unsigned long long uncorrected = 0;
      nvmlReturn_t rc = nvml_.ecc_total(d.handle, kEccCorrected, kEccVolatile, &corrected);
      if (rc == kNvmlSuccess) {
        rc = nvml_.ecc_total(d.handle, kEccUncorrected, kEccVolatile, &uncorrected);
      }
      if (rc == kNvmlSuccess) {
        e.set_ecc_corrected(corrected);
        e.set_ecc_uncorrected(uncorrected);
      } else {
        e.set_ecc_unavailable(absl::StrCat("nvmlDeviceGetTotalEccErrors: ", nvml_.Error(rc)));
      }
      if (!d.xid_why.empty() || !wait_error.empty()) {
        e.set_xid_unavailable(d.xid_why.empty() ? wait_error : d.xid_why);
      } else {
        for (uint64_t xid : xids[i]) e.add_xids(xid);
        if (dropped > 0) {
          e.set_xid_unavailable(absl::StrCat(dropped,
                                             " more XID events since the last look were "
                                             "not read (over ",
                                             kMaxEventsPerRead, ")"));
        }
      }
    }
    return out;
  }

 private:
  struct Device {
    unsigned int index = 0;
    nvmlDevice_t handle = nullptr;
    std::string why;      // the handle could not be had
    std::string xid_why;  // XIDs are not watched
  };

  absl::Mutex mu_;
  std::optional<DynamicLibrary> lib_;
  NvmlCalls nvml_{};
  bool initialized_ = false;
  std::string broken_;      // NVML loaded but unusable
  std::string xid_broken_;  // no event set
  nvmlEventSet_t events_ = nullptr;
  std::vector<Device> devices_;
};

}  // namespace

std::unique_ptr<GpuErrorSource> OpenNvmlGpuErrors() { return std::make_unique<NvmlGpuErrors>(); }

}  // namespace fleet::agent
