// The GPU and NCCL probes on a machine with NVIDIA GPUs (ctest -L gpu; on the lent GPU machine
// through tests/gpu/run-on-gpu-host.sh). Skipped, saying why, where no NVIDIA driver is
// installed. Read-only: NVML and CUDA are only queried.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/health/gpu_errors.h"
#include "agent/probes/gpu.h"
#include "agent/probes/nccl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::IsEmpty;
using ::testing::Not;

class GpuProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    void* nvml = ::dlopen("libnvidia-ml.so.1", RTLD_LAZY);
    if (nvml == nullptr) GTEST_SKIP() << "no NVIDIA driver here (libnvidia-ml.so.1 not found)";
    ::dlclose(nvml);
  }
};

TEST_F(GpuProbeTest, SeesEveryGpuWithItsIdentityAndVersions) {
  v1::NodeProbe probe;
  ProbeGpu({.node_name = "gpu-host"}, &probe);
  const v1::GpuProbe& gpu = probe.gpu();
  std::printf("unavailable: %s\n", absl::StrJoin(probe.unavailable(), " | ").c_str());
  std::printf("driver %s, CUDA driver %s, CUDA runtime %s, CUDA devices %d\n",
              gpu.driver_version().c_str(), gpu.cuda_driver_version().c_str(),
              gpu.cuda_runtime_version().c_str(), gpu.cuda_device_count());
  for (const v1::GpuDevice& d : gpu.gpus()) {
    std::printf(
        "GPU %u: %s %s cc %s %s memory %llu/%llu MiB %u C SM %u MHz mem %u MHz throttle [%s]\n",
        d.index(), d.name().c_str(), d.uuid().c_str(), d.compute_capability().c_str(),
        d.arch().c_str(), static_cast<unsigned long long>(d.memory_used_bytes() >> 20),
        static_cast<unsigned long long>(d.memory_total_bytes() >> 20), d.temperature_c(),
        d.sm_clock_mhz(), d.memory_clock_mhz(), absl::StrJoin(d.throttle_reasons(), ",").c_str());
  }
  ASSERT_GE(gpu.gpus_size(), 1);
  EXPECT_THAT(gpu.driver_version(), Not(IsEmpty()));
  EXPECT_THAT(gpu.cuda_runtime_version(), Not(IsEmpty()));
  EXPECT_THAT(gpu.cuda_driver_version(), Not(IsEmpty()));
  EXPECT_EQ(gpu.cuda_device_count(), gpu.gpus_size());
  for (const v1::GpuDevice& d : gpu.gpus()) {
    EXPECT_THAT(d.name(), Not(IsEmpty()));
    EXPECT_TRUE(absl::StartsWith(d.uuid(), "GPU-")) << d.uuid();
    EXPECT_THAT(d.compute_capability(), Not(IsEmpty()));
    // Hopper (H100, H200) is 9.0; a DGX Spark's GB10 is 12.1.
    if (absl::StrContains(d.name(), "H100") || absl::StrContains(d.name(), "H200")) {
      EXPECT_EQ(d.compute_capability(), "9.0");
      EXPECT_EQ(d.arch(), "sm_90");
      EXPECT_GT(d.memory_total_bytes(), 0u);
    }
  }
}

TEST_F(GpuProbeTest, FindsTheSystemNccl) {
  v1::NodeProbe probe;
  // FLEET_NCCL_PROBE names the helper in a build tree (ctest); in dist/ it lies beside the test.
  const char* helper = std::getenv("FLEET_NCCL_PROBE");
  if (helper != nullptr) {
    ProbeNcclWithHelper({.node_name = "gpu-host"}, helper, &probe);
  } else {
    ProbeNccl({.node_name = "gpu-host"}, &probe);
  }
  std::printf("NCCL %s (%d) from %s: %s\n", probe.nccl().version().c_str(),
              probe.nccl().version_code(), probe.nccl().library().c_str(),
              probe.nccl().how().c_str());
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_THAT(probe.nccl().library(), Not(IsEmpty()));
  EXPECT_THAT(probe.nccl().version(), Not(IsEmpty()));
  // The expectation of the host at hand, when the runner knows it (run-on-gpu-host.sh).
  if (const char* expected = std::getenv("FLEET_EXPECT_NCCL_VERSION")) {
    EXPECT_EQ(probe.nccl().version(), expected);
  }
  // The loader names the file by the directory it searched (/lib/... from ldconfig's cache
  // where /lib is a link to /usr/lib), so the expected library is compared as a real path.
  if (const char* expected = std::getenv("FLEET_EXPECT_NCCL_LIBRARY")) {
    std::error_code ec;
    EXPECT_EQ(std::filesystem::canonical(probe.nccl().library(), ec),
              std::filesystem::canonical(expected, ec))
        << probe.nccl().library() << " is not " << expected;
  }
}

// `fleet health`'s GPU errors: every GPU NVML sees, with its ECC totals or why they are not
// read, and XIDs watched (none expected on a healthy machine) or why not.
TEST_F(GpuProbeTest, GpuErrorsAreReadOrSayWhyForEveryGpu) {
  v1::NodeProbe probe;
  ProbeGpu({.node_name = "gpu-host"}, &probe);
  std::unique_ptr<GpuErrorSource> source = OpenNvmlGpuErrors();
  std::vector<v1::GpuErrors> errors = source->Read();
  ASSERT_EQ(static_cast<int>(errors.size()), probe.gpu().gpus_size());
  for (const v1::GpuErrors& e : errors) {
    std::printf("gpu %u: ecc %s, xid %s\n", e.index(),
                e.ecc_unavailable().empty() ? absl::StrCat(e.ecc_uncorrected(), " uncorrected / ",
                                                           e.ecc_corrected(), " corrected")
                                                  .c_str()
                                            : e.ecc_unavailable().c_str(),
                e.xid_unavailable().empty() ? absl::StrCat(e.xids_size(), " events").c_str()
                                            : e.xid_unavailable().c_str());
    // Data-center GPUs have ECC memory: its counters are read.
    if (absl::StrContains(probe.gpu().gpus(e.index()).name(), "H100") ||
        absl::StrContains(probe.gpu().gpus(e.index()).name(), "H200")) {
      EXPECT_EQ(e.ecc_unavailable(), "");
    }
  }
  // A second read right after sees no new XID on a machine that is not failing.
  for (const v1::GpuErrors& e : source->Read()) EXPECT_EQ(e.xids_size(), 0);
  // The totals /metrics shows: one per GPU, ECC where it was read above.
  std::vector<GpuErrorTotals> totals = source->Totals();
  ASSERT_EQ(totals.size(), errors.size());
  for (size_t i = 0; i < totals.size(); ++i) {
    EXPECT_EQ(totals[i].ecc_corrected.has_value(), errors[i].ecc_unavailable().empty());
  }
}

}  // namespace
}  // namespace fleet::agent
