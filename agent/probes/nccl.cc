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
#include "common/process/process_runner_impl.h"

namespace fleet::agent {
namespace {

// dlopen of a 200 MB libnccl takes well under a second; docker run of a local image a few.
constexpr absl::Duration kHelperTimeout = absl::Seconds(20);
constexpr absl::Duration kDockerTimeout = absl::Seconds(60);

// Where the helper is mounted (read-only) in a throw-away container of the shard's image.
constexpr char kHelperInImage[] = "/fleet-nccl-probe";

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

// The shard's loader variables as "NAME=VALUE" (its own env entries only: the helper inherits
// the rest). Only these go to the helper, in a container too: the shard's env may hold secrets
// (HF_TOKEN) that must not show on a docker command line.
std::vector<std::string> LoaderVariables(const ProbeContext& ctx) {
  std::vector<std::string> env;
  for (const char* name : {"LD_LIBRARY_PATH", "LD_PRELOAD"}) {
    if (std::optional<std::string> value = ShardEnv(ctx, name, /*inherit=*/false)) {
      env.push_back(absl::StrCat(name, "=", *value));
    }
  }
  return env;
}

// VLLM_NCCL_SO_PATH as vLLM reads it (an empty value counts as unset) and where it came from.
struct VllmNcclPath {
  std::string value;
  std::string source;  // "the shard's env", ...
};

// The process runtime's: the shard's env, else the agent's, which the shard inherits.
std::optional<VllmNcclPath> ProcessVllmNcclPath(const ProbeContext& ctx) {
  std::optional<std::string> own = ShardEnv(ctx, "VLLM_NCCL_SO_PATH", /*inherit=*/false);
  if (own) {
    if (own->empty()) return std::nullopt;
    return VllmNcclPath{*own, "the shard's env"};
  }
  std::optional<std::string> inherited = ShardEnv(ctx, "VLLM_NCCL_SO_PATH", /*inherit=*/true);
  if (!inherited || inherited->empty()) return std::nullopt;
  return VllmNcclPath{*inherited, "the agent's env, which the shard inherits"};
}

std::string VllmFix(absl::string_view where) {
  return absl::StrCat(
      "vLLM fails to start when it cannot load it: point VLLM_NCCL_SO_PATH in "
      "the recipe's env at the libnccl.so.2 ",
      where,
      " the shard should use (e.g. the file LD_PRELOAD pins), or remove it so "
      "vLLM loads libnccl.so.2 as the loader finds it");
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

// What fleet-nccl-probe printed (nccl_probe_main.cc).
struct HelperAnswer {
  enum class Kind { kOk, kError, kNone } kind = Kind::kNone;
  int code = 0;         // kOk: ncclGetVersion's integer
  std::string library;  // kOk: the file it came from
  std::string error;    // kError: the helper's message
  std::string loader;   // every other line: the loader's complaints, docker's errors
};

HelperAnswer ParseHelperOutput(const ProbeCommandResult& run) {
  constexpr absl::string_view kPrefix = "fleet-nccl-probe: ";
  absl::string_view line;
  for (absl::string_view each : absl::StrSplit(run.output, '\n')) {
    if (absl::StartsWith(each, kPrefix)) line = each;
  }
  HelperAnswer answer;
  answer.loader = OtherLines(run.output, line);
  absl::string_view rest = absl::StripPrefix(line, kPrefix);
  if (absl::ConsumePrefix(&rest, "ok ")) {
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(rest, absl::MaxSplits(' ', 1));
    if (Exited0(run.wait_status) && absl::SimpleAtoi(parts.first, &answer.code) &&
        !parts.second.empty()) {
      answer.kind = HelperAnswer::Kind::kOk;
      answer.library = std::string(parts.second);
    }
  } else if (absl::ConsumePrefix(&rest, "error ")) {
    answer.kind = HelperAnswer::Kind::kError;
    answer.error = std::string(rest);
  }
  return answer;
}

std::string LoaderNote(const HelperAnswer& answer) {
  return answer.loader.empty() ? "" : absl::StrCat(" (loader: ", answer.loader, ")");
}

void ProbeWithHelper(const ProbeContext& ctx, const std::string& helper, ProcessRunner& runner,
                     v1::NodeProbe* out) {
  struct stat st {};
  if (::stat(helper.c_str(), &st) != 0) {
    out->add_unavailable(absl::StrCat("nccl: helper ", helper,
                                      " not found: install fleet-nccl-probe beside the agent"));
    return;
  }
  std::optional<VllmNcclPath> vllm = ProcessVllmNcclPath(ctx);
  std::vector<std::string> argv = {helper};
  if (vllm) argv.push_back(vllm->value);
  absl::StatusOr<ProbeCommandResult> run =
      RunProbeCommand(runner, argv, LoaderVariables(ctx), kHelperTimeout);
  if (!run.ok()) {
    out->add_unavailable(absl::StrCat("nccl: ", helper, ": ", run.status().message()));
    return;
  }
  HelperAnswer answer = ParseHelperOutput(*run);
  std::string env_text = LoaderEnv(ctx, /*inherit=*/true);
  std::string loaded = vllm
                           ? absl::StrCat("followed VLLM_NCCL_SO_PATH=", vllm->value, " (",
                                          vllm->source, ") as vLLM does: dlopen(", vllm->value, ")")
                           : "dlopen(libnccl.so.2)";
  switch (answer.kind) {
    case HelperAnswer::Kind::kOk: {
      v1::NcclProbe* nccl = out->mutable_nccl();
      nccl->set_library(answer.library);
      nccl->set_version_code(answer.code);
      nccl->set_version(NcclVersionString(answer.code));
      nccl->set_how(absl::StrCat(loaded, " with the shard's ", env_text, LoaderNote(answer)));
      return;
    }
    case HelperAnswer::Kind::kError: {
      const bool absent = absl::StrContains(answer.error, "No such file");
      if (vllm) {
        v1::NcclProbe* nccl = out->mutable_nccl();
        nccl->set_library(vllm->value);
        nccl->set_how(absl::StrCat(loaded, " with the shard's ", env_text));
        nccl->set_error(absl::StrCat("VLLM_NCCL_SO_PATH=", vllm->value, " (", vllm->source, ") ",
                                     absent ? "names no file the loader finds" : "cannot be loaded",
                                     " on ", ctx.node_name.empty() ? "this node" : ctx.node_name,
                                     " with ", env_text, ": ", answer.error, LoaderNote(answer),
                                     ": ", VllmFix("on this node")));
        return;
      }
      std::string why = absent ? absl::StrCat("libnccl.so.2 not found with ", env_text)
                               : absl::StrCat("libnccl.so.2 unusable with ", env_text);
      out->add_unavailable(absl::StrCat("nccl: ", why, ": ", answer.error, LoaderNote(answer)));
      return;
    }
    case HelperAnswer::Kind::kNone:
      break;
  }
  out->add_unavailable(absl::StrCat("nccl: ", helper, " ", DescribeWaitStatus(run->wait_status),
                                    " without an answer: ", OtherLines(run->output, "")));
}

// Lists, in the order the dynamic loader (and PyTorch's RUNPATH) would try them, every
// libnccl.so.2 in the image: one "found<TAB>RULE<TAB>PATH<TAB>REAL_PATH" line each. A set
// VLLM_NCCL_SO_PATH comes first as "vllm<TAB>VALUE<TAB>SOURCE" and replaces the search: a
// path is only checked, a bare name is searched as the loader would (no preload or RUNPATH,
// which hold libnccl.so.2). LD_PRELOAD, LD_LIBRARY_PATH and VLLM_NCCL_SO_PATH come as FLEET_*
// variables so they steer only the search, not this sh; when the shard sets none, the image's
// own values apply, as they would to the shard.
constexpr char kListScript[] = R"sh(
found() { [ -e "$2" ] && printf 'found\t%s\t%s\t%s\n' "$1" "$2" "$(readlink -f "$2")"; }
preload=${FLEET_LD_PRELOAD-$LD_PRELOAD}
library_path=${FLEET_LD_LIBRARY_PATH-$LD_LIBRARY_PATH}
if [ -n "${FLEET_VLLM_NCCL_SO_PATH+set}" ]; then
  vllm=$FLEET_VLLM_NCCL_SO_PATH from="the shard's env"
else
  vllm=$VLLM_NCCL_SO_PATH from="the image's env"
fi
name=libnccl.so.2
if [ -n "$vllm" ]; then
  printf 'vllm\t%s\t%s\n' "$vllm" "$from"
  case "$vllm" in */*) found VLLM_NCCL_SO_PATH "$vllm"; exit 0 ;; esac
  name=$vllm
fi
if [ "$name" = libnccl.so.2 ]; then
  for f in $(echo "$preload" | tr ':' ' '); do
    case "${f##*/}" in libnccl.so*) found LD_PRELOAD "$f" ;; esac
  done
fi
IFS=:
for d in $library_path; do [ -n "$d" ] && found LD_LIBRARY_PATH "$d/$name"; done
unset IFS
if [ "$name" = libnccl.so.2 ]; then
  for f in /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
           /usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
           /usr/lib/python3/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
           /opt/conda/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2; do
    found "PyTorch's RUNPATH (pip nvidia-nccl)" "$f"
  done
fi
if command -v ldconfig >/dev/null 2>&1; then
  for f in $(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF }'); do
    found "ldconfig cache" "$f"
  done
fi
for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib/aarch64-linux-gnu \
         /usr/lib/aarch64-linux-gnu /lib64 /usr/lib64 /lib /usr/lib /usr/local/cuda/lib64 \
         /usr/local/lib; do
  found "default path" "$d/$name"
done
exit 0
)sh";

// `docker run --rm` of the shard's image that never pulls (a missing image is the operator's
// to stage) and has no network; `options` go before the image, `args` after it. A container
// that outlives `kDockerTimeout` is removed by name.
absl::StatusOr<ProbeCommandResult> RunInImage(const ProbeContext& ctx, ProcessRunner& runner,
                                              const std::vector<std::string>& options,
                                              const std::vector<std::string>& args) {
  static std::atomic<int> sequence = 0;
  std::string name = absl::StrCat("fleet-probe-nccl-", ::getpid(), "-", sequence++);
  std::vector<std::string> argv = {ctx.docker, "run", "--rm", "--name", name};
  argv.insert(argv.end(), {"--pull", "never", "--network", "none"});
  argv.insert(argv.end(), options.begin(), options.end());
  argv.push_back(ctx.request.image());
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<ProbeCommandResult> run = RunProbeCommand(runner, argv, {}, kDockerTimeout);
  if (absl::IsDeadlineExceeded(run.status())) {
    RunProbeCommand(runner, {ctx.docker, "rm", "-f", name}, {}, absl::Seconds(10)).IgnoreError();
  }
  return run;
}

// Why the helper did not answer in the image, from what docker and the loader printed.
std::string WhyHelperCannotRun(absl::string_view output) {
  if (absl::StrContains(output, "exec format error")) {
    return "it is built for another CPU architecture than the image's";
  }
  if (absl::StrContains(output, "GLIBC_") && absl::StrContains(output, "not found")) {
    return "the image's glibc is older than the one it was built against";
  }
  if (absl::StrContains(output, absl::StrCat("exec ", kHelperInImage)) &&
      absl::StrContains(output, "no such file or directory")) {
    return "the image has no glibc dynamic loader for it (a static or musl image)";
  }
  return "it gave no answer";
}

// The version of `library` in the image from ncclGetVersion: fleet-nccl-probe, mounted
// read-only, run as the entrypoint of a throw-away container with the shard's loader variables.
// Sets version and version_code, or version_unknown with the reason; never fails the node.
void AskInImage(const ProbeContext& ctx, const std::string& helper, ProcessRunner& runner,
                const std::string& library, v1::NcclProbe* nccl) {
  const std::string& image = ctx.request.image();
  struct stat st {};
  if (::stat(helper.c_str(), &st) != 0) {
    nccl->set_version_unknown(absl::StrCat("not checked: helper ", helper,
                                           " not found (install fleet-nccl-probe beside the agent)"
                                           " to ask ",
                                           library, " in image ", image, " with ncclGetVersion"));
    return;
  }
  std::vector<std::string> options = {"-v", absl::StrCat(helper, ":", kHelperInImage, ":ro"),
                                      "--entrypoint", kHelperInImage};
  for (const std::string& var : LoaderVariables(ctx)) options.insert(options.end(), {"-e", var});
  absl::StatusOr<ProbeCommandResult> run = RunInImage(ctx, runner, options, {library});
  if (!run.ok()) {
    nccl->set_version_unknown(absl::StrCat("not checked: docker CLI ", ctx.docker,
                                           " running fleet-nccl-probe in image ", image, ": ",
                                           run.status().message()));
    return;
  }
  HelperAnswer answer = ParseHelperOutput(*run);
  if (answer.kind == HelperAnswer::Kind::kOk) {
    nccl->set_version_code(answer.code);
    nccl->set_version(NcclVersionString(answer.code));
    absl::StrAppend(nccl->mutable_how(),
                    "; version from ncclGetVersion (fleet-nccl-probe run in the image)");
    return;
  }
  if (answer.kind == HelperAnswer::Kind::kError) {
    nccl->set_version_unknown(absl::StrCat("not checked: fleet-nccl-probe could not load ", library,
                                           " in image ", image, ": ", answer.error,
                                           LoaderNote(answer)));
    return;
  }
  std::string output(absl::StripAsciiWhitespace(run->output));
  nccl->set_version_unknown(absl::StrCat("not checked: fleet-nccl-probe cannot run in image ",
                                         image, " (", WhyHelperCannotRun(output), "; ",
                                         DescribeWaitStatus(run->wait_status), ": ", output,
                                         "), so the version of ", library, " is unknown"));
}

void ProbeInImage(const ProbeContext& ctx, const std::string& helper, ProcessRunner& runner,
                  v1::NodeProbe* out) {
  const std::string& image = ctx.request.image();
  if (image.empty()) {
    out->add_unavailable("nccl: the docker runtime is requested but no image is named");
    return;
  }
  std::vector<std::string> options = {"--entrypoint", "sh"};
  for (const char* var : {"LD_LIBRARY_PATH", "LD_PRELOAD", "VLLM_NCCL_SO_PATH"}) {
    if (std::optional<std::string> value = ShardEnv(ctx, var, /*inherit=*/false)) {
      options.insert(options.end(), {"-e", absl::StrCat("FLEET_", var, "=", *value)});
    }
  }
  absl::StatusOr<ProbeCommandResult> run = RunInImage(ctx, runner, options, {"-c", kListScript});
  if (!run.ok()) {
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
  std::optional<VllmNcclPath> vllm;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    if (fields.size() == 3 && fields[0] == "vllm" && !vllm) {
      vllm = VllmNcclPath{std::string(fields[1]), std::string(fields[2])};
      continue;
    }
    if (fields.size() != 4 || fields[0] != "found") continue;
    absl::string_view rule = fields[1], path = fields[2], real = fields[3];
    v1::NcclProbe* nccl = out->mutable_nccl();
    nccl->set_library(std::string(path));
    std::string file = path == real ? std::string(path) : absl::StrCat(path, " -> ", real);
    nccl->set_how(absl::StrCat("image ", image, ": ", file, " found by ", rule,
                               vllm ? absl::StrCat(" (followed VLLM_NCCL_SO_PATH=", vllm->value,
                                                   " from ", vllm->source, ", as vLLM does)")
                                    : ""));
    if (std::optional<std::string> version = NcclVersionFromFileName(real)) {
      nccl->set_version(*version);
      absl::StrAppend(nccl->mutable_how(), "; version from the file name");
    } else {
      AskInImage(ctx, helper, runner, std::string(path), nccl);
    }
    return;
  }
  if (vllm) {
    v1::NcclProbe* nccl = out->mutable_nccl();
    nccl->set_library(vllm->value);
    nccl->set_how(absl::StrCat("image ", image, ": followed VLLM_NCCL_SO_PATH=", vllm->value,
                               " from ", vllm->source, ", as vLLM does"));
    nccl->set_error(absl::StrCat("VLLM_NCCL_SO_PATH=", vllm->value, " (", vllm->source,
                                 ") names no file in image ", image, " with ",
                                 LoaderEnv(ctx, /*inherit=*/false), ": ",
                                 VllmFix(absl::StrCat("inside ", image))));
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

void ProbeNcclWith(const ProbeContext& ctx, const std::string& helper, ProcessRunner& runner,
                   v1::NodeProbe* out) {
  if (ctx.request.runtime() == v1::SHARD_RUNTIME_DOCKER) {
    if (!ctx.live) {
      out->add_unavailable("nccl: not probed: docker runs only on the live node");
      return;
    }
    ProbeInImage(ctx, helper, runner, out);
    return;
  }
  if (!ctx.live) {
    out->add_unavailable(absl::StrCat("nccl: not probed: ", ctx.root,
                                      " is a recorded tree, and only the running machine's "
                                      "loader can say which libnccl.so.2 it picks"));
    return;
  }
  ProbeWithHelper(ctx, helper, runner, out);
}

void ProbeNcclWithHelper(const ProbeContext& ctx, const std::string& helper, v1::NodeProbe* out) {
  ProbeNcclWith(ctx, helper, *DefaultProcessRunner(), out);
}

void ProbeNccl(const ProbeContext& ctx, v1::NodeProbe* out) {
  ProbeNcclWithHelper(ctx, HelperBesideSelf(), out);
}

}  // namespace fleet::agent
