// The GPU, NCCL, image and model probes on a machine without a GPU: the GPU probe says why it
// sees nothing; the NCCL probe loads fake libnccl.so.2 builds (2.28.9, 2.30.4) through the
// shard's LD_LIBRARY_PATH, LD_PRELOAD and VLLM_NCCL_SO_PATH, and its decisions (which library,
// where its version comes from) are checked with a fake process runner; models are hashed and
// cached in temporary trees; and the image and in-image NCCL cases run against a real Docker
// engine (scripts/dockerd.sh starts one) with images imported from a busybox rootfs (one also
// holding glibc, so fleet-nccl-probe runs inside it), skipped, saying why, where none answers.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/probes/artifacts.h"
#include "agent/probes/gpu.h"
#include "agent/probes/nccl.h"
#include "agent/stage/manifest.h"
#include "common/files.h"
#include "common/pki.h"
#include "common/process/fake_process_runner.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/docker_test_image.h"

namespace fleet::agent {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

std::string Dir(const std::string& file) { return file.substr(0, file.rfind('/')); }

using ::fleet::testing::ImportBusyboxImage;
using ::fleet::testing::Shell;

std::string Unavailable(const v1::NodeProbe& probe) {
  return absl::StrJoin(probe.unavailable(), "\n");
}

void AddEnv(ProbeContext& ctx, const std::string& name, const std::string& value) {
  v1::EnvVar* var = ctx.request.add_shard_env();
  var->set_name(name);
  var->set_value(value);
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/fleet-probes-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // Writes `content` to path()/relative, creating directories.
  void Write(const std::string& relative, const std::string& content) const {
    std::string file = absl::StrCat(path_, "/", relative);
    ASSERT_TRUE(MakeDirectories(Dir(file)).ok());
    ASSERT_TRUE(WriteFileAtomically(file, content).ok());
  }

 private:
  std::string path_;
};

TEST(NcclVersionTest, DecodesBothEncodings) {
  struct Case {
    int code;
    const char* version;
  };
  for (const Case& c :
       {Case{22809, "2.28.9"}, Case{23004, "2.30.4"}, Case{22803, "2.28.3"}, Case{21003, "2.10.3"},
        Case{20903, "2.9.3"}, Case{2804, "2.8.4"}, Case{2708, "2.7.8"}, Case{2406, "2.4.6"}}) {
    EXPECT_EQ(NcclVersionString(c.code), c.version) << c.code;
  }
}

TEST(NcclVersionTest, ReadsTheVersionFromFullFileNamesOnly) {
  EXPECT_EQ(NcclVersionFromFileName("libnccl.so.2.30.4"), "2.30.4");
  EXPECT_EQ(NcclVersionFromFileName("/usr/lib/x86_64-linux-gnu/libnccl.so.2.28.3"), "2.28.3");
  EXPECT_EQ(NcclVersionFromFileName("libnccl.so.2"), std::nullopt);
  EXPECT_EQ(NcclVersionFromFileName("libnccl.so.2.30"), std::nullopt);
  EXPECT_EQ(NcclVersionFromFileName("libnccl.so.2.30.x"), std::nullopt);
  EXPECT_EQ(NcclVersionFromFileName("libnccl-net.so.2.30.4"), std::nullopt);
}

TEST(GpuProbeTest, NamesArchitecturesVersionsAndThrottleReasons) {
  EXPECT_EQ(ArchOfComputeCapability(12, 1), "sm_121");
  EXPECT_EQ(ArchOfComputeCapability(9, 0), "sm_90");
  EXPECT_EQ(CudaVersionString(13000), "13.0");
  EXPECT_EQ(CudaVersionString(12080), "12.8");
  EXPECT_THAT(ThrottleReasonNames(0), IsEmpty());
  EXPECT_EQ(ThrottleReasonNames(0x1 | 0x4 | 0x40),
            (std::vector<std::string>{"GpuIdle", "SwPowerCap", "HwThermalSlowdown"}));
  EXPECT_EQ(ThrottleReasonNames(0x8 | 0x400), (std::vector<std::string>{"HwSlowdown", "0x400"}));
}

TEST(GpuProbeTest, SaysWhyWithoutAnNvidiaDriver) {
  if (void* nvml = ::dlopen("libnvidia-ml.so.1", RTLD_LAZY)) {
    ::dlclose(nvml);
    GTEST_SKIP() << "this machine has an NVIDIA driver; tests/gpu covers it";
  }
  v1::NodeProbe probe;
  ProbeGpu({.node_name = "spark-1"}, &probe);
  EXPECT_THAT(probe.gpu().gpus(), IsEmpty());
  EXPECT_EQ(probe.gpu().driver_version(), "");
  EXPECT_THAT(probe.unavailable(),
              Contains("gpu: libnvidia-ml.so.1 not found: no NVIDIA driver on this node"));
  // Without a driver the CUDA runtime (when installed) cannot count devices either.
  EXPECT_EQ(probe.gpu().cuda_device_count(), -1);
  EXPECT_EQ(probe.gpu().cuda_driver_version(), "");
  EXPECT_THAT(probe.unavailable(), Contains(StartsWith("cuda: "))) << Unavailable(probe);
}

TEST(GpuProbeTest, RecordedTreeIsNotProbed) {
  v1::NodeProbe probe;
  ProbeGpu({.root = "/fixtures/spark-1", .live = false}, &probe);
  EXPECT_EQ(probe.gpu().cuda_device_count(), -1);
  EXPECT_THAT(probe.unavailable(), Contains(StartsWith("gpu: not probed: /fixtures/spark-1")));
}

TEST(NcclProbeTest, ShardsLdLibraryPathPicksTheLibrary) {
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", absl::StrCat("/nonexistent:", Dir(FAKE_NCCL_22809)));
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), absl::StrCat(Dir(FAKE_NCCL_22809), "/libnccl.so.2"));
  EXPECT_EQ(probe.nccl().version(), "2.28.9");
  EXPECT_EQ(probe.nccl().version_code(), 22809);
  EXPECT_THAT(probe.nccl().how(),
              HasSubstr(absl::StrCat("LD_LIBRARY_PATH=/nonexistent:", Dir(FAKE_NCCL_22809))));
}

TEST(NcclProbeTest, ShardsLdPreloadWinsOverLdLibraryPath) {
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", Dir(FAKE_NCCL_22809));
  AddEnv(ctx, "LD_PRELOAD", FAKE_NCCL_23004);
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), FAKE_NCCL_23004);
  EXPECT_EQ(probe.nccl().version(), "2.30.4");
  EXPECT_EQ(probe.nccl().version_code(), 23004);
}

TEST(NcclProbeTest, MissingLibraryNamesTheSearchPath) {
  if (void* nccl = ::dlopen("libnccl.so.2", RTLD_LAZY)) {
    ::dlclose(nccl);
    GTEST_SKIP() << "libnccl.so.2 is in this machine's default search path, so it is found";
  }
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", "/nonexistent/lib");
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_FALSE(probe.has_nccl());
  EXPECT_THAT(probe.unavailable(), Contains(StartsWith("nccl: libnccl.so.2 not found with "
                                                       "LD_LIBRARY_PATH=/nonexistent/lib")));
}

// The helper's answer when the loader finds nothing, from a stand-in helper: the real one finds
// a system NCCL on machines that have one, whatever the shard's LD_LIBRARY_PATH.
TEST(NcclProbeTest, HelpersNotFoundAnswerBecomesTheReason) {
  TempDir dir;
  dir.Write("fleet-nccl-probe",
            "#!/bin/sh\necho 'ERROR: ld.so: object x.so from LD_PRELOAD cannot be preloaded'\n"
            "echo 'fleet-nccl-probe: error libnccl.so.2: cannot open shared object file: No such "
            "file or directory'\nexit 1\n");
  std::string helper = dir.path() + "/fleet-nccl-probe";
  ASSERT_EQ(::chmod(helper.c_str(), 0755), 0);
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", "/opt/nccl/lib");
  AddEnv(ctx, "LD_PRELOAD", "");
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, helper, &probe);
  EXPECT_FALSE(probe.has_nccl());
  EXPECT_THAT(probe.unavailable(),
              Contains("nccl: libnccl.so.2 not found with LD_LIBRARY_PATH=/opt/nccl/lib "
                       "LD_PRELOAD=: libnccl.so.2: cannot open shared object file: No such "
                       "file or directory (loader: ERROR: ld.so: object x.so from LD_PRELOAD "
                       "cannot be preloaded)"));
}

TEST(NcclProbeTest, MissingHelperOrRecordedTreeSaysWhy) {
  v1::NodeProbe probe;
  ProbeNcclWithHelper({}, "/nonexistent/fleet-nccl-probe", &probe);
  EXPECT_THAT(probe.unavailable(),
              Contains("nccl: helper /nonexistent/fleet-nccl-probe not found: install "
                       "fleet-nccl-probe beside the agent"));
  v1::NodeProbe recorded;
  ProbeNcclWithHelper({.root = "/fixtures/spark-1", .live = false}, NCCL_PROBE_HELPER, &recorded);
  EXPECT_FALSE(recorded.has_nccl());
  EXPECT_THAT(recorded.unavailable(), Contains(StartsWith("nccl: not probed: /fixtures")));
}

TEST(NcclProbeTest, PipWheelsPlainLibncclSo2IsAskedForItsVersion) {
  TempDir wheel;
  std::string lib = wheel.path() + "/nvidia/nccl/lib";
  ASSERT_TRUE(MakeDirectories(lib).ok());
  std::filesystem::copy_file(FAKE_NCCL_23004, lib + "/libnccl.so.2");
  ASSERT_EQ(NcclVersionFromFileName(lib + "/libnccl.so.2"), std::nullopt);
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", lib);
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), lib + "/libnccl.so.2");
  EXPECT_EQ(probe.nccl().version(), "2.30.4");
  EXPECT_EQ(probe.nccl().version_code(), 23004);
}

// vLLM dlopen()s VLLM_NCCL_SO_PATH instead of libnccl.so.2: the probe judges that file even
// where the loader would pick another.
TEST(NcclProbeTest, VllmNcclSoPathIsTheLibraryJudged) {
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", Dir(FAKE_NCCL_23004));
  AddEnv(ctx, "VLLM_NCCL_SO_PATH", FAKE_NCCL_22809);
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), FAKE_NCCL_22809);
  EXPECT_EQ(probe.nccl().version(), "2.28.9");
  EXPECT_THAT(probe.nccl().how(),
              HasSubstr(absl::StrCat("followed VLLM_NCCL_SO_PATH=", FAKE_NCCL_22809,
                                     " (the shard's env) as vLLM does")));
}

// A VLLM_NCCL_SO_PATH naming no file is an error with the fix, never another library in its
// place (the libnccl.so.2 of LD_LIBRARY_PATH is right there).
TEST(NcclProbeTest, VllmNcclSoPathNamingNoFileIsAnError) {
  ProbeContext ctx{.node_name = "spark-1"};
  AddEnv(ctx, "LD_LIBRARY_PATH", Dir(FAKE_NCCL_23004));
  AddEnv(ctx, "VLLM_NCCL_SO_PATH", "/opt/absent/libnccl.so.2");
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().version(), "");
  EXPECT_EQ(probe.nccl().library(), "/opt/absent/libnccl.so.2");
  EXPECT_THAT(probe.nccl().error(),
              AllOf(StartsWith("VLLM_NCCL_SO_PATH=/opt/absent/libnccl.so.2 (the shard's env) "
                               "names no file the loader finds on spark-1"),
                    HasSubstr("No such file"),
                    HasSubstr("point VLLM_NCCL_SO_PATH in the recipe's env at the libnccl.so.2"),
                    HasSubstr("or remove it")));
}

// ---- The NCCL probe's decisions, with docker and the helper faked ----

constexpr char kImage[] = "vllm-node:latest";
constexpr char kWheel[] = "/usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2";

RunResult Answer(const std::string& out, int exit_status = 0) {
  return RunResult{.wait_status = exit_status << 8, .out = out};
}

bool Has(const std::vector<std::string>& argv, const std::string& word) {
  return std::find(argv.begin(), argv.end(), word) != argv.end();
}

// Docker answers the listing script with `listing` and the helper's run with `helper`.
class NcclDecisionTest : public ::testing::Test {
 protected:
  NcclDecisionTest() {
    ctx_.request.set_runtime(v1::SHARD_RUNTIME_DOCKER);
    ctx_.request.set_image(kImage);
    AddEnv(ctx_, "HF_TOKEN", "hf_secret");
    runner_.set_run_handler([this](const SpawnOptions& options) -> absl::StatusOr<RunResult> {
      return Has(options.argv, "-c") ? listing_ : helper_;
    });
  }

  v1::NodeProbe Probe() {
    v1::NodeProbe probe;
    ProbeNcclWith(ctx_, NCCL_PROBE_HELPER, runner_, &probe);
    return probe;
  }

  ProbeContext ctx_{.node_name = "spark-1"};
  FakeProcessRunner runner_;
  RunResult listing_;
  RunResult helper_ = Answer("fleet-nccl-probe: ok 23004 " + std::string(kWheel));
};

TEST_F(NcclDecisionTest, VersionInTheFileNameNeedsNoHelper) {
  listing_ = Answer("found\tdefault path\t/usr/lib/libnccl.so.2\t/usr/lib/libnccl.so.2.30.4\n");
  v1::NodeProbe probe = Probe();
  EXPECT_EQ(probe.nccl().version(), "2.30.4");
  EXPECT_EQ(probe.nccl().version_code(), 0);
  EXPECT_EQ(runner_.runs().size(), 1u);
}

TEST_F(NcclDecisionTest, PlainLibncclSo2IsAskedInTheImageWithTheShardsLoaderEnv) {
  AddEnv(ctx_, "LD_LIBRARY_PATH", "/opt/extra");
  listing_ = Answer(
      absl::StrCat("found\tPyTorch's RUNPATH (pip nvidia-nccl)\t", kWheel, "\t", kWheel, "\n"));
  v1::NodeProbe probe = Probe();
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), kWheel);
  EXPECT_EQ(probe.nccl().version(), "2.30.4");
  EXPECT_EQ(probe.nccl().version_code(), 23004);
  EXPECT_EQ(probe.nccl().version_unknown(), "");
  EXPECT_THAT(probe.nccl().how(), HasSubstr("version from ncclGetVersion (fleet-nccl-probe run in "
                                            "the image)"));

  ASSERT_EQ(runner_.runs().size(), 2u);
  const std::vector<std::string> run = runner_.runs()[1].argv;
  EXPECT_EQ(run[1], "run");
  for (const std::string& word :
       {std::string("--rm"), absl::StrCat(NCCL_PROBE_HELPER, ":/fleet-nccl-probe:ro"),
        std::string("/fleet-nccl-probe"), std::string("LD_LIBRARY_PATH=/opt/extra"),
        std::string(kImage)}) {
    EXPECT_TRUE(Has(run, word)) << word << " in " << absl::StrJoin(run, " ");
  }
  EXPECT_EQ(run.back(), kWheel);
  // The shard's other variables may be secrets: they stay off the command line.
  for (const SpawnOptions& each : runner_.runs()) {
    EXPECT_THAT(absl::StrJoin(each.argv, " "), Not(HasSubstr("hf_secret")));
  }
}

TEST_F(NcclDecisionTest, HelperThatCannotRunInTheImageLeavesTheVersionUnknown) {
  listing_ = Answer(absl::StrCat("found\tLD_LIBRARY_PATH\t", kWheel, "\t", kWheel, "\n"));
  struct Case {
    std::string output;
    int exit_status;
    std::string reason;
  };
  for (const Case& c : {
           Case{"exec /fleet-nccl-probe: no such file or directory", 1,
                "(the image has no glibc dynamic loader for it (a static or musl image); exited "
                "with status 1: exec /fleet-nccl-probe: no such file or directory)"},
           Case{"exec /fleet-nccl-probe: exec format error", 1,
                "(it is built for another CPU architecture than the image's; "},
           Case{"/fleet-nccl-probe: /lib/aarch64-linux-gnu/libc.so.6: version `GLIBC_2.34' not "
                "found (required by /fleet-nccl-probe)",
                1, "(the image's glibc is older than the one it was built against; "},
       }) {
    helper_ = Answer(c.output, c.exit_status);
    v1::NodeProbe probe = Probe();
    EXPECT_THAT(probe.unavailable(), IsEmpty()) << c.output;
    EXPECT_EQ(probe.nccl().library(), kWheel);
    EXPECT_EQ(probe.nccl().version(), "") << c.output;
    EXPECT_EQ(probe.nccl().version_code(), 0);
    EXPECT_EQ(probe.nccl().error(), "");
    EXPECT_THAT(probe.nccl().version_unknown(),
                AllOf(StartsWith("not checked: fleet-nccl-probe cannot run in image "
                                 "vllm-node:latest "),
                      HasSubstr(c.reason)));
  }

  helper_ = Answer("fleet-nccl-probe: error libcuda.so.1: cannot open shared object file", 1);
  EXPECT_EQ(Probe().nccl().version_unknown(),
            absl::StrCat("not checked: fleet-nccl-probe could not load ", kWheel,
                         " in image vllm-node:latest: libcuda.so.1: cannot open shared object "
                         "file"));
}

TEST_F(NcclDecisionTest, MissingHelperLeavesTheVersionUnknown) {
  listing_ = Answer(absl::StrCat("found\tLD_LIBRARY_PATH\t", kWheel, "\t", kWheel, "\n"));
  v1::NodeProbe probe;
  ProbeNcclWith(ctx_, "/nonexistent/fleet-nccl-probe", runner_, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().version(), "");
  EXPECT_THAT(probe.nccl().version_unknown(),
              StartsWith("not checked: helper /nonexistent/fleet-nccl-probe not found"));
  EXPECT_EQ(runner_.runs().size(), 1u);
}

TEST_F(NcclDecisionTest, VllmNcclSoPathIsFollowedInTheImage) {
  AddEnv(ctx_, "VLLM_NCCL_SO_PATH", "/opt/nccl/libnccl.so.2.28.9");
  listing_ = Answer(
      "vllm\t/opt/nccl/libnccl.so.2.28.9\tthe shard's env\n"
      "found\tVLLM_NCCL_SO_PATH\t/opt/nccl/libnccl.so.2.28.9\t/opt/nccl/libnccl.so.2.28.9\n");
  v1::NodeProbe probe = Probe();
  EXPECT_TRUE(Has(runner_.runs()[0].argv, "FLEET_VLLM_NCCL_SO_PATH=/opt/nccl/libnccl.so.2.28.9"));
  EXPECT_EQ(probe.nccl().library(), "/opt/nccl/libnccl.so.2.28.9");
  EXPECT_EQ(probe.nccl().version(), "2.28.9");
  EXPECT_THAT(probe.nccl().how(),
              HasSubstr("found by VLLM_NCCL_SO_PATH (followed VLLM_NCCL_SO_PATH=/opt/nccl/"
                        "libnccl.so.2.28.9 from the shard's env, as vLLM does)"));
}

TEST_F(NcclDecisionTest, VllmNcclSoPathNamingNothingInTheImageIsAnError) {
  listing_ = Answer("vllm\t/opt/absent/libnccl.so.2\tthe image's env\n");
  v1::NodeProbe probe = Probe();
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().version(), "");
  EXPECT_EQ(probe.nccl().library(), "/opt/absent/libnccl.so.2");
  EXPECT_THAT(probe.nccl().error(),
              AllOf(StartsWith("VLLM_NCCL_SO_PATH=/opt/absent/libnccl.so.2 (the image's env) "
                               "names no file in image vllm-node:latest"),
                    HasSubstr("point VLLM_NCCL_SO_PATH in the recipe's env at the libnccl.so.2 "
                              "inside vllm-node:latest")));
  EXPECT_EQ(runner_.runs().size(), 1u);
}

TEST_F(NcclDecisionTest, ProcessRuntimeHandsVllmNcclSoPathToTheHelper) {
  ctx_.request.set_runtime(v1::SHARD_RUNTIME_PROCESS);
  AddEnv(ctx_, "VLLM_NCCL_SO_PATH", "/opt/nccl/libnccl.so.2.30.4");
  helper_ = Answer("fleet-nccl-probe: ok 23004 /opt/nccl/libnccl.so.2.30.4");
  v1::NodeProbe probe = Probe();
  ASSERT_EQ(runner_.runs().size(), 1u);
  EXPECT_THAT(runner_.runs()[0].argv,
              ElementsAre(NCCL_PROBE_HELPER, "/opt/nccl/libnccl.so.2.30.4"));
  EXPECT_EQ(probe.nccl().version(), "2.30.4");

  // Empty, as vLLM reads it, is unset: libnccl.so.2 as the loader finds it.
  AddEnv(ctx_, "VLLM_NCCL_SO_PATH", "");
  Probe();
  EXPECT_THAT(runner_.runs()[1].argv, ElementsAre(NCCL_PROBE_HELPER));
}

TEST(ImageProbeTest, NoDockerCliSaysWhy) {
  ProbeContext ctx{.node_name = "spark-1", .docker = "/nonexistent/docker"};
  ctx.request.set_image("vllm/vllm-openai:v0.11.0");
  ctx.request.set_runtime(v1::SHARD_RUNTIME_DOCKER);
  v1::NodeProbe probe;
  ProbeArtifacts(ctx, &probe);
  ProbeNccl(ctx, &probe);
  ASSERT_EQ(probe.images_size(), 1);
  EXPECT_FALSE(probe.images(0).present());
  EXPECT_THAT(probe.images(0).error(), HasSubstr("docker CLI /nonexistent/docker"));
  EXPECT_THAT(probe.unavailable(), Contains(StartsWith("image vllm/vllm-openai:v0.11.0: ")));
  EXPECT_THAT(probe.unavailable(), Contains(StartsWith("nccl: docker CLI /nonexistent/docker")));
}

// The hash ProbeArtifacts documents (a stage manifest's tree hash), computed here with the
// one-shot Sha256Hex; every file is under one 8 MiB chunk, so its one chunk hash is its own.
std::string ExpectedHash(const std::string& dir,
                         const std::vector<std::pair<std::string, std::string>>& files) {
  std::string data;
  for (const auto& [relative, content] : files) {
    struct stat st {};
    EXPECT_EQ(::stat((dir + "/" + relative).c_str(), &st), 0) << relative;
    data += relative + '\0' + std::to_string(content.size()) + '\0' +
            std::to_string(st.st_mode & 07777) + '\0' +
            absl::HexStringToBytes(pki::Sha256Hex(content));
  }
  return pki::Sha256Hex(data);
}

class ModelProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    big_ = std::string(3 << 19, 'x');  // 1.5 MiB: crosses the 1 MiB hashing chunk
    big_[1 << 20] = 'y';
    model_.Write("config.json", "{}");
    model_.Write("weights/model-00001.safetensors", big_);
    model_.Write("tokenizer.json", "tokens");
    // A symlinked file counts under its own name; a symlinked directory is not followed.
    std::filesystem::create_symlink("tokenizer.json", model_.path() + "/vocab.json");
    std::filesystem::create_directory_symlink(model_.path() + "/weights",
                                              model_.path() + "/weights-link");
  }

  v1::ModelProbe Probe(const std::string& path, bool hash = true) {
    ProbeContext ctx{.node_name = "spark-1", .cache_dir = cache_.path() + "/stage-cache"};
    ctx.request.add_model_paths(path);
    ctx.request.set_hash_models(hash);
    v1::NodeProbe probe;
    ProbeArtifacts(ctx, &probe);
    EXPECT_EQ(probe.models_size(), 1);
    EXPECT_THAT(probe.unavailable(), IsEmpty());
    return probe.models_size() == 1 ? probe.models(0) : v1::ModelProbe();
  }

  std::string big_;
  TempDir model_;
  TempDir cache_;
};

TEST_F(ModelProbeTest, SizesCountsAndHashesEveryFile) {
  v1::ModelProbe model = Probe(model_.path());
  EXPECT_EQ(model.path(), model_.path());
  EXPECT_TRUE(model.present());
  EXPECT_EQ(model.error(), "");
  EXPECT_EQ(model.file_count(), 4u);
  EXPECT_EQ(model.total_bytes(), 2 + big_.size() + 6 + 6);
  EXPECT_EQ(model.sha256(),
            ExpectedHash(model_.path(), {{"config.json", "{}"},
                                         {"tokenizer.json", "tokens"},
                                         {"vocab.json", "tokens"},
                                         {"weights/model-00001.safetensors", big_}}));
  EXPECT_FALSE(model.from_cache());
  EXPECT_EQ(Probe(model_.path(), /*hash=*/false).sha256(), "");
}

TEST_F(ModelProbeTest, CachedHashIsReusedUntilAFileChanges) {
  std::string first = Probe(model_.path()).sha256();
  v1::ModelProbe again = Probe(model_.path());
  EXPECT_TRUE(again.from_cache());
  EXPECT_EQ(again.sha256(), first);

  // Same size, new content and a later mtime: hashed again.
  model_.Write("config.json", "[]");
  struct timespec later[2] = {{.tv_sec = ::time(nullptr) + 10, .tv_nsec = 0},
                              {.tv_sec = ::time(nullptr) + 10, .tv_nsec = 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (model_.path() + "/config.json").c_str(), later, 0), 0);
  v1::ModelProbe changed = Probe(model_.path());
  EXPECT_FALSE(changed.from_cache());
  EXPECT_NE(changed.sha256(), first);
  EXPECT_TRUE(Probe(model_.path()).from_cache());

  // A rename keeps every file's size and mtime but changes its directory's mtime.
  struct timespec even_later[2] = {{.tv_sec = ::time(nullptr) + 20, .tv_nsec = 0},
                                   {.tv_sec = ::time(nullptr) + 20, .tv_nsec = 0}};
  std::filesystem::rename(model_.path() + "/config.json", model_.path() + "/config2.json");
  ASSERT_EQ(::utimensat(AT_FDCWD, model_.path().c_str(), even_later, 0), 0);
  v1::ModelProbe renamed = Probe(model_.path());
  EXPECT_FALSE(renamed.from_cache());
  EXPECT_NE(renamed.sha256(), changed.sha256());
}

// `fleet stage model` scans (and a receiver records) through the same manifest cache, so the
// first probe after staging reads no content and reports the manifest's tree hash.
TEST_F(ModelProbeTest, ATreeStagingScannedIsProbedFromItsManifestCache) {
  absl::StatusOr<ScannedTree> staged =
      BuildManifest(model_.path(), {.cache_dir = cache_.path() + "/stage-cache"});
  ASSERT_TRUE(staged.ok()) << staged.status();
  ASSERT_FALSE(staged->from_cache);
  v1::ModelProbe model = Probe(model_.path());
  EXPECT_TRUE(model.from_cache());
  EXPECT_EQ(model.sha256(), staged->manifest.tree_sha256());
}

TEST_F(ModelProbeTest, ASingleModelFileIsHashedAsATreeOfThatFile) {
  v1::ModelProbe file = Probe(model_.path() + "/config.json");
  EXPECT_TRUE(file.present());
  EXPECT_EQ(file.file_count(), 1u);
  EXPECT_FALSE(file.from_cache());
  EXPECT_EQ(file.sha256(), ExpectedHash(model_.path(), {{"config.json", "{}"}}));
  EXPECT_TRUE(Probe(model_.path() + "/config.json").from_cache());
}

TEST_F(ModelProbeTest, ResolvesHomeAndHuggingFaceIds) {
  TempDir home;
  std::string hub = home.path() + "/.cache/huggingface/hub/models--Qwen--Qwen3-0.6B";
  home.Write(".cache/huggingface/hub/models--Qwen--Qwen3-0.6B/refs/main", "abc123\n");
  home.Write(".cache/huggingface/hub/models--Qwen--Qwen3-0.6B/blobs/e3b0", "{\"a\":1}");
  ASSERT_TRUE(MakeDirectories(hub + "/snapshots/abc123").ok());
  std::filesystem::create_symlink("../../blobs/e3b0", hub + "/snapshots/abc123/config.json");
  home.Write("models/tiny/config.json", "{}");
  const char* old_home = std::getenv("HOME");
  std::string saved = old_home != nullptr ? old_home : "";
  ::setenv("HOME", home.path().c_str(), 1);

  v1::ModelProbe hf = Probe("Qwen/Qwen3-0.6B");
  EXPECT_EQ(hf.path(), hub + "/snapshots/abc123");
  EXPECT_TRUE(hf.present());
  EXPECT_EQ(hf.file_count(), 1u);
  EXPECT_EQ(hf.sha256(), ExpectedHash(hf.path(), {{"config.json", "{\"a\":1}"}}));

  v1::ModelProbe tilde = Probe("~/models/tiny");
  EXPECT_EQ(tilde.path(), home.path() + "/models/tiny");
  EXPECT_TRUE(tilde.present());

  v1::ModelProbe absent = Probe("Qwen/Absent");
  EXPECT_FALSE(absent.present());
  EXPECT_THAT(absent.error(), HasSubstr("huggingface-cli download Qwen/Absent"));

  if (old_home != nullptr) ::setenv("HOME", saved.c_str(), 1);
}

TEST_F(ModelProbeTest, MissingDirectoryAndBadPathsSayWhy) {
  v1::ModelProbe missing = Probe(model_.path() + "/absent");
  EXPECT_FALSE(missing.present());
  EXPECT_THAT(missing.error(), HasSubstr("no such directory"));
  v1::ModelProbe relative = Probe("models/a/b");
  EXPECT_FALSE(relative.present());
  EXPECT_THAT(relative.error(), HasSubstr("neither an absolute path"));
}

TEST_F(ModelProbeTest, RecordedTreeIsReadBeneathItsRoot) {
  ProbeContext ctx{.root = model_.path(), .live = false};
  ctx.request.add_model_paths("/weights");
  v1::NodeProbe probe;
  ProbeArtifacts(ctx, &probe);
  ASSERT_EQ(probe.models_size(), 1);
  EXPECT_EQ(probe.models(0).path(), model_.path() + "/weights");
  EXPECT_EQ(probe.models(0).file_count(), 1u);
}

// Image ID and in-image NCCL against a real Docker engine. The image holds busybox (static: no
// glibc), a fake /usr/lib/libnccl.so.2.30.4 (+ libnccl.so.2 link),
// /opt/nccl/lib/libnccl.so.2.28.9 (+ link) and a plain /opt/wheel/nvidia/nccl/lib/libnccl.so.2
// (2.28.9). glibc_image_ adds the host's glibc (what fleet-nccl-probe needs) and a plain
// libnccl.so.2 (2.30.4) where a pip wheel puts it.
class DockerProbeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    image_ = absl::StrCat("fleet-test-nccl:", ::getpid());
    skip_reason_ = ImportBusyboxImage(
        FLEET_SOURCE_DIR, image_,
        absl::StrCat("mkdir -p $ROOT/usr/lib $ROOT/opt/nccl/lib $ROOT/opt/wheel/nvidia/nccl/lib; ",
                     "cp ", FAKE_NCCL_23004, " $ROOT/usr/lib/libnccl.so.2.30.4; ",
                     "ln -s libnccl.so.2.30.4 $ROOT/usr/lib/libnccl.so.2; cp ", FAKE_NCCL_22809,
                     " $ROOT/opt/nccl/lib/libnccl.so.2.28.9; ",
                     "ln -s libnccl.so.2.28.9 $ROOT/opt/nccl/lib/libnccl.so.2; cp ",
                     FAKE_NCCL_22809, " $ROOT/opt/wheel/nvidia/nccl/lib/libnccl.so.2"));
    if (!skip_reason_.empty()) {
      image_.clear();
      return;
    }
    glibc_image_ = absl::StrCat("fleet-test-nccl-glibc:", ::getpid());
    skip_reason_ = ImportBusyboxImage(
        FLEET_SOURCE_DIR, glibc_image_,
        absl::StrCat("for f in $(ldd ", NCCL_PROBE_HELPER, " | grep -o '/[^ ]*'); do ",
                     "mkdir -p $ROOT$(dirname $f); cp -L $f $ROOT$f; done; ", "w=$ROOT",
                     Dir(kWheel), "; mkdir -p $w; cp ", FAKE_NCCL_23004, " $w/libnccl.so.2"));
    if (!skip_reason_.empty()) glibc_image_.clear();
  }
  static void TearDownTestSuite() {
    for (const std::string& image : {image_, glibc_image_}) {
      if (!image.empty()) Shell(absl::StrCat("docker rmi -f ", image, " >/dev/null 2>&1"));
    }
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static ProbeContext Context(const std::string& image) {
    ProbeContext ctx{.node_name = "spark-1"};
    ctx.request.set_runtime(v1::SHARD_RUNTIME_DOCKER);
    ctx.request.set_image(image);
    return ctx;
  }

  static std::string skip_reason_;
  static std::string image_;
  static std::string glibc_image_;
};

std::string DockerProbeTest::skip_reason_;
std::string DockerProbeTest::image_;
std::string DockerProbeTest::glibc_image_;

TEST_F(DockerProbeTest, MissingImageNamesTheFix) {
  ProbeContext ctx = Context("fleet-test-absent:none");
  v1::NodeProbe probe;
  ProbeArtifacts(ctx, &probe);
  ProbeNccl(ctx, &probe);
  ASSERT_EQ(probe.images_size(), 1);
  EXPECT_FALSE(probe.images(0).present());
  EXPECT_EQ(probe.images(0).error(),
            "image fleet-test-absent:none not present on spark-1: docker pull "
            "fleet-test-absent:none (or fleet stage image fleet-test-absent:none)");
  EXPECT_THAT(probe.unavailable(),
              Contains("nccl: image fleet-test-absent:none not present on spark-1: docker pull "
                       "fleet-test-absent:none (or fleet stage image fleet-test-absent:none)"));
}

TEST_F(DockerProbeTest, PresentImageReportsItsId) {
  v1::NodeProbe probe;
  ProbeArtifacts(Context(image_), &probe);
  ASSERT_EQ(probe.images_size(), 1);
  EXPECT_TRUE(probe.images(0).present()) << probe.images(0).error();
  std::string id(absl::StripAsciiWhitespace(
      Shell(absl::StrCat("docker image inspect --format '{{.Id}}' ", image_)).value_or("?")));
  EXPECT_EQ(probe.images(0).id(), id);
  EXPECT_THAT(probe.images(0).id(), StartsWith("sha256:"));
  EXPECT_THAT(probe.images(0).repo_digests(), IsEmpty());  // imported, never pushed
}

TEST_F(DockerProbeTest, NcclVersionComesFromTheFileTheImageWouldLoad) {
  v1::NodeProbe probe;
  ProbeNccl(Context(image_), &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), "/usr/lib/libnccl.so.2");
  EXPECT_EQ(probe.nccl().version(), "2.30.4");
  EXPECT_EQ(probe.nccl().version_code(), 0);
  EXPECT_THAT(probe.nccl().how(), HasSubstr("version from the file name"));

  ProbeContext ctx = Context(image_);
  AddEnv(ctx, "LD_LIBRARY_PATH", "/opt/nccl/lib");
  v1::NodeProbe steered;
  ProbeNccl(ctx, &steered);
  EXPECT_EQ(steered.nccl().library(), "/opt/nccl/lib/libnccl.so.2");
  EXPECT_EQ(steered.nccl().version(), "2.28.9");
  EXPECT_THAT(steered.nccl().how(), HasSubstr("LD_LIBRARY_PATH"));
}

TEST_F(DockerProbeTest, VllmNcclSoPathIsFollowedInTheImage) {
  ProbeContext ctx = Context(image_);
  AddEnv(ctx, "VLLM_NCCL_SO_PATH", "/opt/nccl/lib/libnccl.so.2.28.9");
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), "/opt/nccl/lib/libnccl.so.2.28.9");
  EXPECT_EQ(probe.nccl().version(), "2.28.9");
  EXPECT_THAT(probe.nccl().how(),
              HasSubstr("followed VLLM_NCCL_SO_PATH=/opt/nccl/lib/libnccl.so.2.28.9 from the "
                        "shard's env"));

  // A bare name is searched as the loader would, LD_LIBRARY_PATH first.
  ProbeContext bare = Context(image_);
  AddEnv(bare, "VLLM_NCCL_SO_PATH", "libnccl.so.2.28.9");
  AddEnv(bare, "LD_LIBRARY_PATH", "/opt/nccl/lib");
  v1::NodeProbe searched;
  ProbeNcclWithHelper(bare, NCCL_PROBE_HELPER, &searched);
  EXPECT_EQ(searched.nccl().library(), "/opt/nccl/lib/libnccl.so.2.28.9");
  EXPECT_EQ(searched.nccl().version(), "2.28.9");

  // Naming nothing: an error, not the image's /usr/lib/libnccl.so.2 in its place.
  ProbeContext absent = Context(image_);
  AddEnv(absent, "VLLM_NCCL_SO_PATH", "/opt/absent/libnccl.so.2");
  v1::NodeProbe missing;
  ProbeNcclWithHelper(absent, NCCL_PROBE_HELPER, &missing);
  EXPECT_THAT(missing.unavailable(), IsEmpty());
  EXPECT_EQ(missing.nccl().version(), "");
  EXPECT_EQ(missing.nccl().library(), "/opt/absent/libnccl.so.2");
  EXPECT_THAT(missing.nccl().error(),
              StartsWith(absl::StrCat("VLLM_NCCL_SO_PATH=/opt/absent/libnccl.so.2 (the shard's "
                                      "env) names no file in image ",
                                      image_)));
}

// busybox-static has no glibc dynamic loader, so the helper cannot run there: the version is
// "not checked", with the reason, and nothing is counted unavailable.
TEST_F(DockerProbeTest, PlainLibncclSo2InAnImageWithoutGlibcIsNotChecked) {
  ProbeContext ctx = Context(image_);
  AddEnv(ctx, "LD_LIBRARY_PATH", "/opt/wheel/nvidia/nccl/lib");
  v1::NodeProbe probe;
  ProbeNcclWithHelper(ctx, NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), "/opt/wheel/nvidia/nccl/lib/libnccl.so.2");
  EXPECT_EQ(probe.nccl().version(), "");
  EXPECT_THAT(probe.nccl().version_unknown(),
              AllOf(StartsWith(absl::StrCat("not checked: fleet-nccl-probe cannot run in image ",
                                            image_, " (the image has no glibc dynamic loader")),
                    HasSubstr("/opt/wheel/nvidia/nccl/lib/libnccl.so.2 is unknown")));
}

TEST_F(DockerProbeTest, PlainLibncclSo2IsAskedForItsVersionInTheImage) {
  v1::NodeProbe probe;
  ProbeNcclWithHelper(Context(glibc_image_), NCCL_PROBE_HELPER, &probe);
  EXPECT_THAT(probe.unavailable(), IsEmpty());
  EXPECT_EQ(probe.nccl().library(), kWheel);
  EXPECT_EQ(probe.nccl().version(), "2.30.4") << probe.nccl().version_unknown();
  EXPECT_EQ(probe.nccl().version_code(), 23004);
  EXPECT_THAT(probe.nccl().how(),
              AllOf(HasSubstr("found by PyTorch's RUNPATH (pip nvidia-nccl)"),
                    HasSubstr("version from ncclGetVersion (fleet-nccl-probe run in the image)")));
}

}  // namespace
}  // namespace fleet::agent
