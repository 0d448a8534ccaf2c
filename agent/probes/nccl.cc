// The NCCL probe: a helper process for the process runtime, `docker run` for the docker runtime.
#include "agent/probes/nccl.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/probes/artifacts.h"
#include "common/process/process_runner.h"

namespace fleet::agent {
namespace {

// dlopen of a 200 MB libnccl takes well under a second; docker run of a local image a few.
constexpr absl::Duration kHelperTimeout = absl::Seconds(20);
constexpr absl::Duration kDockerTimeout = absl::Seconds(60);

// The value the shard gets for `name`: its own env entry, else (process runtime, which
// inherits the agent's environment) the agent's.
std::optional<std::string> ShardEnv(const ProbeContext& ctx, absl::string_view name, bool inherit) {
  std::optional<std::string> value;
  for (const v1::EnvVar& var : ctx.request.shard_env()) {
    if (var.name() == name) value = var.value();  // the last entry wins, as in the shard's env
  }
  if (!value && inherit) {
    if (const char* own = std::getenv(std::string(name).c_str())) value = own;
  }
  return value;
}

std::string Describe(const std::optional<std::string>& value) { return value ? *value : "(unset)"; }

std::string LoaderEnv(const ProbeContext& ctx, bool inherit) {
  return absl::StrCat("LD_LIBRARY_PATH=", Describe(ShardEnv(ctx, "LD_LIBRARY_PATH", inherit)),
                      " LD_PRELOAD=", Describe(ShardEnv(ctx, "LD_PRELOAD", inherit)));
}

std::string HelperBesideSelf() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return kNcclProbeHelper;
  std::string path(self, n);
  return absl::StrCat(path.substr(0, path.rfind('/') + 1), kNcclProbeHelper);
}

bool Exited0(int wait_status) { return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0; }

// Lines of `output` that are not the helper's answer: the loader's own complaints ("ERROR:
// ld.so: object ... from LD_PRELOAD cannot be preloaded"), worth showing the operator.
std::string OtherLines(absl::string_view output, absl::string_view answer) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipWhitespace())) {
    if (line != answer) lines.emplace_back(absl::StripAsciiWhitespace(line));
  }
  return absl::StrJoin(lines, "; ");
}

void ProbeWithHelper(const ProbeContext& ctx, const std::string& helper, v1::NodeProbe* out) {
  struct stat st {};
  if (::stat(helper.c_str(), &st) != 0) {
    out->add_unavailable(absl::StrCat("nccl: helper ", helper,
                                      " not found: install fleet-nccl-probe beside the agent"));
    return;
  }
  std::vector<std::string> env;
  for (const char* name : {"LD_LIBRARY_PATH", "LD_PRELOAD"}) {
    if (std::optional<std::string> value = ShardEnv(ctx, name, /*inherit=*/false)) {
      env.push_back(absl::StrCat(name, "=", *value));
    }
  }
  absl::StatusOr<ProbeCommandResult> run = RunProbeCommand({helper}, env, kHelperTimeout);
  if (!run.ok()) {
    out->add_unavailable(absl::StrCat("nccl: ", helper, ": ", run.status().message()));
    return;
  }
  constexpr absl::string_view kPrefix = "fleet-nccl-probe: ";
  absl::string_view answer;
  for (absl::string_view line : absl::StrSplit(run->output, '\n')) {
    if (absl::StartsWith(line, kPrefix)) answer = line;
  }
  absl::string_view rest = absl::StripPrefix(answer, kPrefix);
  std::string loader = OtherLines(run->output, answer);
  std::string env_text = LoaderEnv(ctx, /*inherit=*/true);
  if (absl::ConsumePrefix(&rest, "ok ")) {
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(rest, absl::MaxSplits(' ', 1));
    int code = 0;
    if (Exited0(run->wait_status) && absl::SimpleAtoi(parts.first, &code) &&
        !parts.second.empty()) {
      v1::NcclProbe* nccl = out->mutable_nccl();
      nccl->set_library(std::string(parts.second));
      nccl->set_version_code(code);
      nccl->set_version(NcclVersionString(code));
      nccl->set_how(absl::StrCat("dlopen(libnccl.so.2) with the shard's ", env_text,
                                 loader.empty() ? "" : absl::StrCat(" (loader: ", loader, ")")));
      return;
    }
  }
  if (absl::ConsumePrefix(&rest, "error ")) {
    std::string why = absl::StrContains(rest, "No such file")
                          ? absl::StrCat("libnccl.so.2 not found with ", env_text)
                          : absl::StrCat("libnccl.so.2 unusable with ", env_text);
    out->add_unavailable(absl::StrCat(
        "nccl: ", why, ": ", rest, loader.empty() ? "" : absl::StrCat(" (loader: ", loader, ")")));
    return;
  }
  out->add_unavailable(absl::StrCat("nccl: ", helper, " ", DescribeWaitStatus(run->wait_status),
                                    " without an answer: ", OtherLines(run->output, "")));
}

// Lists, in the order the dynamic loader (and PyTorch's RUNPATH) would try them, every
// libnccl.so.2 in the image: one "RULE<TAB>PATH<TAB>REAL_PATH" line each. LD_PRELOAD and
// LD_LIBRARY_PATH come as FLEET_* variables so they steer only the search, not this sh; when
// the shard sets none, the image's own values apply, as they would to the shard.
constexpr char kListScript[] = R"sh(
found() { [ -e "$2" ] && printf '%s\t%s\t%s\n' "$1" "$2" "$(readlink -f "$2")"; }
preload=${FLEET_LD_PRELOAD-$LD_PRELOAD}
library_path=${FLEET_LD_LIBRARY_PATH-$LD_LIBRARY_PATH}
for f in $(echo "$preload" | tr ':' ' '); do
  case "${f##*/}" in libnccl.so*) found LD_PRELOAD "$f" ;; esac
done
IFS=:
for d in $library_path; do [ -n "$d" ] && found LD_LIBRARY_PATH "$d/libnccl.so.2"; done
unset IFS
for f in /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
         /usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
         /usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
         /opt/conda/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2; do
  found "PyTorch's RUNPATH (pip nvidia-nccl)" "$f"
done
if command -v ldconfig >/dev/null 2>&1; then
  for f in $(ldconfig -p 2>/dev/null | awk '$1 == "libnccl.so.2" { print $NF }'); do
    found "ldconfig cache" "$f"
  done
fi
for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu \
         /usr/lib/aarch64-linux-gnu /lib64 /usr/lib64 /lib /usr/lib /usr/local/cuda/lib64 \
         /usr/local/lib; do
  found "default path" "$d/libnccl.so.2"
done
exit 0
)sh";

void ProbeInImage(const ProbeContext& ctx, v1::NodeProbe* out) {
  const std::string& image = ctx.request.image();
  if (image.empty()) {
    out->add_unavailable("nccl: the docker runtime is requested but no image is named");
    return;
  }
  static std::atomic<int> sequence = 0;
  std::string name = absl::StrCat("fleet-probe-nccl-", ::getpid(), "-", sequence++);
  // Never pull (a missing image is the operator's to stage) and no network: it only lists files.
  std::vector<std::string> argv = {ctx.docker, "run", "--rm", "--name", name};
  argv.insert(argv.end(), {"--pull", "never", "--network", "none", "--entrypoint", "sh"});
  for (const char* var : {"LD_LIBRARY_PATH", "LD_PRELOAD"}) {
    if (std::optional<std::string> value = ShardEnv(ctx, var, /*inherit=*/false)) {
      argv.push_back("-e");
      argv.push_back(absl::StrCat("FLEET_", var, "=", *value));
    }
  }
  argv.insert(argv.end(), {image, "-c", kListScript});
  absl::StatusOr<ProbeCommandResult> run = RunProbeCommand(argv, {}, kDockerTimeout);
  if (!run.ok()) {
    if (absl::IsDeadlineExceeded(run.status())) {
      RunProbeCommand({ctx.docker, "rm", "-f", name}, {}, absl::Seconds(10)).IgnoreError();
    }
    out->add_unavailable(
        absl::StrCat("nccl: docker CLI ", ctx.docker, ": ", run.status().message()));
    return;
  }
  std::string output(absl::StripAsciiWhitespace(run->output));
  if (!Exited0(run->wait_status)) {
    std::string why;
    if (absl::StrContains(output, "No such image")) {
      why = absl::StrCat("image ", image, " not present on ", ctx.node_name, ": docker pull ",
                         image, " (or fleet stage image ", image, ")");
    } else if (absl::StrContains(output, "Cannot connect to the Docker daemon")) {
      why = absl::StrCat("no Docker engine answers on ", ctx.node_name, ": ", output);
    } else {
      why = absl::StrCat("docker run ", image, " ", DescribeWaitStatus(run->wait_status), ": ",
                         output);
    }
    out->add_unavailable(absl::StrCat("nccl: ", why));
    return;
  }
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    if (fields.size() != 3) continue;
    absl::string_view rule = fields[0], path = fields[1], real = fields[2];
    v1::NcclProbe* nccl = out->mutable_nccl();
    nccl->set_library(std::string(path));
    std::string file = path == real ? std::string(path) : absl::StrCat(path, " -> ", real);
    if (std::optional<std::string> version = NcclVersionFromFileName(real)) {
      nccl->set_version(*version);
      nccl->set_how(absl::StrCat("image ", image, ": ", file, " found by ", rule,
                                 "; version from the file name"));
    } else {
      nccl->set_how(absl::StrCat("image ", image, ": ", file, " found by ", rule));
      out->add_unavailable(absl::StrCat("nccl: version: image ", image, ": ", file,
                                        " carries no version in its file name"));
    }
    return;
  }
  out->add_unavailable(absl::StrCat("nccl: libnccl.so.2 not found in image ", image, " with ",
                                    LoaderEnv(ctx, /*inherit=*/false),
                                    " (searched LD_PRELOAD, LD_LIBRARY_PATH, pip nvidia-nccl, "
                                    "ldconfig -p, /usr/lib and /usr/local/cuda/lib64)"));
}

}  // namespace

std::string NcclVersionString(int code) {
  if (code >= 10000) return absl::StrCat(code / 10000, ".", code / 100 % 100, ".", code % 100);
  return absl::StrCat(code / 1000, ".", code / 100 % 10, ".", code % 100);
}

std::optional<std::string> NcclVersionFromFileName(absl::string_view name) {
  name = name.substr(name.rfind('/') + 1);
  if (!absl::ConsumePrefix(&name, "libnccl.so.")) return std::nullopt;
  std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
  if (parts.size() != 3) return std::nullopt;
  for (absl::string_view part : parts) {
    int unused = 0;
    if (part.empty() || !absl::SimpleAtoi(part, &unused)) return std::nullopt;
  }
  return std::string(name);
}

void ProbeNcclWithHelper(const ProbeContext& ctx, const std::string& helper, v1::NodeProbe* out) {
  if (ctx.request.runtime() == v1::SHARD_RUNTIME_DOCKER) {
    if (!ctx.live) {
      out->add_unavailable("nccl: not probed: docker runs only on the live node");
      return;
    }
    ProbeInImage(ctx, out);
    return;
  }
  if (!ctx.live) {
    out->add_unavailable(absl::StrCat("nccl: not probed: ", ctx.root,
                                      " is a recorded tree, and only the running machine's "
                                      "loader can say which libnccl.so.2 it picks"));
    return;
  }
  ProbeWithHelper(ctx, helper, out);
}

void ProbeNccl(const ProbeContext& ctx, v1::NodeProbe* out) {
  ProbeNcclWithHelper(ctx, HelperBesideSelf(), out);
}

}  // namespace fleet::agent
