// The GPU probe through dlopen()ed NVML and CUDA runtime libraries.
#include "agent/probes/gpu.h"

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/probes/dynamic_library.h"

namespace fleet::agent {
namespace {

// The few NVML types and constants used here, mirroring nvml.h (which NVIDIA ships with the
// driver's development files, not installed on build machines). Values are NVML's ABI.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr int kNvmlTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr int kNvmlClockSm = 1;         // NVML_CLOCK_SM
constexpr int kNvmlClockMem = 2;        // NVML_CLOCK_MEM
// NVML_DEVICE_NAME_V2_BUFFER_SIZE, NVML_DEVICE_UUID_V2_BUFFER_SIZE and
// NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE are 96, 96 and 80; one size that covers all three.
constexpr unsigned int kNvmlStringSize = 96;

// The CUDA runtime's error type (cudaError_t), 0 being cudaSuccess.
using cudaError_t = int;

// Why a library did not load, in the words an operator needs.
std::string LoadFailure(absl::string_view what, absl::string_view dlerror, absl::string_view why) {
  if (absl::StrContains(dlerror, "No such file")) return absl::StrCat(what, " not found: ", why);
  return absl::StrCat(what, " could not be loaded: ", dlerror);
}

// The NVML entry points this probe calls, all resolved before any is called.
struct Nvml {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  const char* (*error_string)(nvmlReturn_t);
  nvmlReturn_t (*driver_version)(char*, unsigned int);
  nvmlReturn_t (*count)(unsigned int*);
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*);
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*compute_capability)(nvmlDevice_t, int*, int*);
  nvmlReturn_t (*memory_info)(nvmlDevice_t, nvmlMemory_t*);
  nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned int*);
  nvmlReturn_t (*clock_info)(nvmlDevice_t, int, unsigned int*);
  nvmlReturn_t (*throttle_reasons)(nvmlDevice_t, unsigned long long*);

  std::string Error(nvmlReturn_t code) const {
    const char* text = error_string(code);
    return text != nullptr ? std::string(text) : absl::StrCat("NVML error ", code);
  }
};

// Resolves every entry point; names the first one missing.
absl::StatusOr<Nvml> ResolveNvml(const DynamicLibrary& lib) {
  Nvml nvml{};
  std::string missing;
  auto resolve = [&](auto& fn, const char* symbol) {
    fn = lib.Symbol<std::remove_reference_t<decltype(fn)>>(symbol);
    if (fn == nullptr && missing.empty()) missing = symbol;
  };
  resolve(nvml.init, "nvmlInit_v2");
  resolve(nvml.shutdown, "nvmlShutdown");
  resolve(nvml.error_string, "nvmlErrorString");
  resolve(nvml.driver_version, "nvmlSystemGetDriverVersion");
  resolve(nvml.count, "nvmlDeviceGetCount_v2");
  resolve(nvml.handle_by_index, "nvmlDeviceGetHandleByIndex_v2");
  resolve(nvml.name, "nvmlDeviceGetName");
  resolve(nvml.uuid, "nvmlDeviceGetUUID");
  resolve(nvml.compute_capability, "nvmlDeviceGetCudaComputeCapability");
  resolve(nvml.memory_info, "nvmlDeviceGetMemoryInfo");
  resolve(nvml.temperature, "nvmlDeviceGetTemperature");
  resolve(nvml.clock_info, "nvmlDeviceGetClockInfo");
  // Drivers from R535 name it "clocks event reasons" and may one day drop the old name.
  nvml.throttle_reasons =
      lib.Symbol<decltype(nvml.throttle_reasons)>("nvmlDeviceGetCurrentClocksThrottleReasons");
  if (nvml.throttle_reasons == nullptr) {
    resolve(nvml.throttle_reasons, "nvmlDeviceGetCurrentClocksEventReasons");
  }
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(lib.name(), " lacks ", missing, " (driver older than this agent supports)"));
  }
  return nvml;
}

void ProbeDevice(const Nvml& nvml, unsigned int index, v1::GpuProbe* gpu, v1::NodeProbe* out) {
  auto unavailable = [&](absl::string_view field, nvmlReturn_t code) {
    out->add_unavailable(absl::StrCat("gpu ", index, ": ", field, ": ", nvml.Error(code)));
  };
  nvmlDevice_t device = nullptr;
  if (nvmlReturn_t rc = nvml.handle_by_index(index, &device); rc != kNvmlSuccess) {
    unavailable("nvmlDeviceGetHandleByIndex_v2", rc);
    return;
  }
  v1::GpuDevice* dev = gpu->add_gpus();
  dev->set_index(index);
  std::array<char, kNvmlStringSize> text{};
  if (nvmlReturn_t rc = nvml.name(device, text.data(), text.size()); rc == kNvmlSuccess) {
    dev->set_name(text.data());
  } else {
    unavailable("name", rc);
  }
  text.fill('\0');
  if (nvmlReturn_t rc = nvml.uuid(device, text.data(), text.size()); rc == kNvmlSuccess) {
    dev->set_uuid(text.data());
  } else {
    unavailable("uuid", rc);
  }
  int major = 0;
  int minor = 0;
  if (nvmlReturn_t rc = nvml.compute_capability(device, &major, &minor); rc == kNvmlSuccess) {
    dev->set_compute_capability(absl::StrCat(major, ".", minor));
    dev->set_arch(ArchOfComputeCapability(major, minor));
  } else {
    unavailable("compute capability", rc);
  }
  // The GB10 of a DGX Spark shares system memory with its CPU, and NVML answers Not Supported
  // for its memory; the fields then stay 0 and the line says why.
  nvmlMemory_t memory{};
  if (nvmlReturn_t rc = nvml.memory_info(device, &memory); rc == kNvmlSuccess) {
    dev->set_memory_total_bytes(memory.total);
    dev->set_memory_used_bytes(memory.used);
  } else {
    unavailable("memory", rc);
  }
  unsigned int value = 0;
  if (nvmlReturn_t rc = nvml.temperature(device, kNvmlTemperatureGpu, &value); rc == kNvmlSuccess) {
    dev->set_temperature_c(value);
  } else {
    unavailable("temperature", rc);
  }
  if (nvmlReturn_t rc = nvml.clock_info(device, kNvmlClockSm, &value); rc == kNvmlSuccess) {
    dev->set_sm_clock_mhz(value);
  } else {
    unavailable("SM clock", rc);
  }
  if (nvmlReturn_t rc = nvml.clock_info(device, kNvmlClockMem, &value); rc == kNvmlSuccess) {
    dev->set_memory_clock_mhz(value);
  } else {
    unavailable("memory clock", rc);
  }
  unsigned long long reasons = 0;
  if (nvmlReturn_t rc = nvml.throttle_reasons(device, &reasons); rc == kNvmlSuccess) {
    for (std::string& name : ThrottleReasonNames(reasons)) dev->add_throttle_reasons(name);
  } else {
    unavailable("throttle reasons", rc);
  }
}

void ProbeNvml(v1::GpuProbe* gpu, v1::NodeProbe* out) {
  absl::StatusOr<DynamicLibrary> lib = DynamicLibrary::Create({"libnvidia-ml.so.1"});
  if (!lib.ok()) {
    out->add_unavailable(absl::StrCat(
        "gpu: ",
        LoadFailure("libnvidia-ml.so.1", lib.status().message(), "no NVIDIA driver on this node")));
    return;
  }
  absl::StatusOr<Nvml> nvml = ResolveNvml(*lib);
  if (!nvml.ok()) {
    out->add_unavailable(absl::StrCat("gpu: ", nvml.status().message()));
    return;
  }
  if (nvmlReturn_t rc = nvml->init(); rc != kNvmlSuccess) {
    out->add_unavailable(absl::StrCat("gpu: nvmlInit_v2: ", nvml->Error(rc)));
    return;
  }
  std::array<char, kNvmlStringSize> version{};
  if (nvmlReturn_t rc = nvml->driver_version(version.data(), version.size()); rc == kNvmlSuccess) {
    gpu->set_driver_version(version.data());
  } else {
    out->add_unavailable(absl::StrCat("gpu: driver version: ", nvml->Error(rc)));
  }
  unsigned int count = 0;
  if (nvmlReturn_t rc = nvml->count(&count); rc == kNvmlSuccess) {
    for (unsigned int i = 0; i < count; ++i) ProbeDevice(*nvml, i, gpu, out);
  } else {
    out->add_unavailable(absl::StrCat("gpu: nvmlDeviceGetCount_v2: ", nvml->Error(rc)));
  }
  if (nvmlReturn_t rc = nvml->shutdown(); rc != kNvmlSuccess) {
    out->add_unavailable(absl::StrCat("gpu: nvmlShutdown: ", nvml->Error(rc)));
  }
}

void ProbeCudaRuntime(v1::GpuProbe* gpu, v1::NodeProbe* out) {
  absl::StatusOr<DynamicLibrary> lib = DynamicLibrary::Create(
      {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "/usr/local/cuda/lib64/libcudart.so"});
  if (!lib.ok()) {
    out->add_unavailable(absl::StrCat(
        "cuda: ", LoadFailure("libcudart.so", lib.status().message(),
                              "no CUDA runtime in the loader's path nor in /usr/local/cuda")));
    return;
  }
  auto error_string = lib->Symbol<const char* (*)(cudaError_t)>("cudaGetErrorString");
  auto device_count = lib->Symbol<cudaError_t (*)(int*)>("cudaGetDeviceCount");
  auto driver_version = lib->Symbol<cudaError_t (*)(int*)>("cudaDriverGetVersion");
  auto runtime_version = lib->Symbol<cudaError_t (*)(int*)>("cudaRuntimeGetVersion");
  if (error_string == nullptr || device_count == nullptr || driver_version == nullptr ||
      runtime_version == nullptr) {
    out->add_unavailable(absl::StrCat("cuda: ", lib->name(),
                                      " lacks cudaGetDeviceCount, cudaDriverGetVersion, "
                                      "cudaRuntimeGetVersion or cudaGetErrorString"));
    return;
  }
  auto failed = [&](absl::string_view call, cudaError_t rc) {
    const char* text = error_string(rc);
    out->add_unavailable(
        absl::StrCat("cuda: ", call, ": ", text != nullptr ? text : absl::StrCat("error ", rc)));
  };
  int version = 0;
  if (cudaError_t rc = runtime_version(&version); rc == 0) {
    gpu->set_cuda_runtime_version(CudaVersionString(version));
  } else {
    failed("cudaRuntimeGetVersion", rc);
  }
  // cudaDriverGetVersion succeeds with 0 when no driver is installed.
  version = 0;
  if (cudaError_t rc = driver_version(&version); rc != 0) {
    failed("cudaDriverGetVersion", rc);
  } else if (version == 0) {
    out->add_unavailable("cuda: cudaDriverGetVersion: no CUDA driver (libcuda.so.1) installed");
  } else {
    gpu->set_cuda_driver_version(CudaVersionString(version));
  }
  int count = 0;
  if (cudaError_t rc = device_count(&count); rc == 0) {
    gpu->set_cuda_device_count(count);
  } else {
    failed("cudaGetDeviceCount", rc);
  }
}

}  // namespace

std::string ArchOfComputeCapability(int major, int minor) {
  return absl::StrCat("sm_", major, minor);
}

std::string CudaVersionString(int version) {
  return absl::StrCat(version / 1000, ".", (version % 1000) / 10);
}

std::vector<std::string> ThrottleReasonNames(uint64_t mask) {
  // nvml.h's nvmlClocksThrottleReason* (nvmlClocksEventReason*) bits.
  static constexpr std::pair<uint64_t, const char*> kNames[] = {
      {0x1, "GpuIdle"},
      {0x2, "ApplicationsClocksSetting"},
      {0x4, "SwPowerCap"},
      {0x8, "HwSlowdown"},
      {0x10, "SyncBoost"},
      {0x20, "SwThermalSlowdown"},
      {0x40, "HwThermalSlowdown"},
      {0x80, "HwPowerBrakeSlowdown"},
      {0x100, "DisplayClockSetting"},
  };
  std::vector<std::string> names;
  for (const auto& [bit, name] : kNames) {
    if (mask & bit) names.emplace_back(name);
    mask &= ~bit;
  }
  for (uint64_t bit = 1; mask != 0; bit <<= 1) {
    if (mask & bit) names.push_back(absl::StrCat("0x", absl::Hex(bit)));
    mask &= ~bit;
  }
  return names;
}

void ProbeGpu(const ProbeContext& ctx, v1::NodeProbe* out) {
  v1::GpuProbe* gpu = out->mutable_gpu();
  gpu->set_cuda_device_count(-1);
  if (!ctx.live) {
    out->add_unavailable(absl::StrCat("gpu: not probed: ", ctx.root,
                                      " is a recorded tree, and NVML and CUDA describe only the "
                                      "running machine"));
    return;
  }
  ProbeNvml(gpu, out);
  ProbeCudaRuntime(gpu, out);
}

}  // namespace fleet::agent
