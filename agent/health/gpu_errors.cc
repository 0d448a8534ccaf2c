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
constexpr size_t kMaxEventsPerRead = 256;

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
    Drain();
    for (Device& d : devices_) {
      v1::GpuErrors& e = out.emplace_back();
      e.set_index(d.index);
      if (d.handle == nullptr) {
        e.set_ecc_unavailable(d.why);
        e.set_xid_unavailable(d.why);
        continue;
      }
      unsigned long long corrected = 0;
      unsigned long long uncorrected = 0;
      if (nvmlReturn_t rc = ReadEcc(d, corrected, uncorrected); rc == kNvmlSuccess) {
        e.set_ecc_corrected(corrected);
        e.set_ecc_uncorrected(uncorrected);
      } else {
        e.set_ecc_unavailable(absl::StrCat("nvmlDeviceGetTotalEccErrors: ", nvml_.Error(rc)));
      }
      if (!d.xid_why.empty() || !wait_error_.empty()) {
        e.set_xid_unavailable(d.xid_why.empty() ? wait_error_ : d.xid_why);
      } else {
        for (uint64_t xid : d.pending) e.add_xids(xid);
        if (d.dropped > 0) {
          e.set_xid_unavailable(absl::StrCat(d.dropped,
                                             " more XID events since the last look were not "
                                             "read (over ",
                                             kMaxEventsPerRead, ")"));
        }
      }
      d.pending.clear();
      d.dropped = 0;
    }
    return out;
  }

  std::vector<GpuErrorTotals> Totals() override {
    absl::MutexLock lock(&mu_);
    std::vector<GpuErrorTotals> out;
    if (!lib_.has_value() || !broken_.empty()) return out;
    Drain();
    for (const Device& d : devices_) {
      if (d.handle == nullptr) continue;
      GpuErrorTotals& t = out.emplace_back();
      t.index = d.index;
      unsigned long long corrected = 0;
      unsigned long long uncorrected = 0;
      if (ReadEcc(d, corrected, uncorrected) == kNvmlSuccess) {
        t.ecc_corrected = corrected;
        t.ecc_uncorrected = uncorrected;
      }
      if (d.xid_why.empty() && wait_error_.empty()) t.xids = d.xid_total;
    }
    return out;
  }

 private:
  struct Device {
    unsigned int index = 0;
    nvmlDevice_t handle = nullptr;
    std::string why;                // the handle could not be had
    std::string xid_why;            // XIDs are not watched
    std::vector<uint64_t> pending;  // XIDs not yet given to Read
    int dropped = 0;                // XIDs past kMaxEventsPerRead since the last Read
    uint64_t xid_total = 0;         // every XID since the agent started
  };

  // Moves the events NVML holds into each device's pending list and total.
  void Drain() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (events_ == nullptr) return;
    wait_error_.clear();
    while (true) {
      nvmlEventData_t data{};
      nvmlReturn_t rc = nvml_.event_set_wait(events_, &data, 0);
      if (rc == kNvmlErrorTimeout) return;  // none left
      if (rc != kNvmlSuccess) {
        wait_error_ = absl::StrCat("nvmlEventSetWait_v2: ", nvml_.Error(rc));
        return;
      }
      for (Device& d : devices_) {
        if (d.handle != data.device) continue;
        ++d.xid_total;
        if (d.pending.size() < kMaxEventsPerRead) {
          d.pending.push_back(data.eventData);
        } else {
          ++d.dropped;
        }
      }
    }
  }

  nvmlReturn_t ReadEcc(const Device& d, unsigned long long& corrected,
                       unsigned long long& uncorrected) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    nvmlReturn_t rc = nvml_.ecc_total(d.handle, kEccCorrected, kEccVolatile, &corrected);
    if (rc != kNvmlSuccess) return rc;
    return nvml_.ecc_total(d.handle, kEccUncorrected, kEccVolatile, &uncorrected);
  }

  absl::Mutex mu_;
  std::optional<DynamicLibrary> lib_;
  NvmlCalls nvml_{};
  bool initialized_ = false;
  std::string broken_;      // NVML loaded but unusable
  std::string xid_broken_;  // no event set
  nvmlEventSet_t events_ = nullptr;
  std::vector<Device> devices_ ABSL_GUARDED_BY(mu_);
  std::string wait_error_ ABSL_GUARDED_BY(mu_);  // the last drain's, when NVML failed
};

}  // namespace

std::unique_ptr<GpuErrorSource> OpenNvmlGpuErrors() { return std::make_unique<NvmlGpuErrors>(); }

}  // namespace fleet::agent
