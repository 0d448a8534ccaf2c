// Image and model probes: `docker image inspect`, a walk of each model directory, and a
// streamed SHA-256 of its files cached by (path, size, count, newest mtime).
#include "agent/probes/artifacts.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/process/process_runner_impl.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "openssl/evp.h"

namespace fleet::agent {
namespace {

// `docker image inspect` answers from the local store; seconds only when the engine is busy.
constexpr absl::Duration kInspectTimeout = absl::Seconds(30);
// Files are hashed through a buffer of this size, so memory stays bounded for any model.
constexpr size_t kHashChunk = 1 << 20;

bool Exited0(int wait_status) { return WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0; }

void ProbeImage(const ProbeContext& ctx, v1::NodeProbe* out) {
  const std::string& image = ctx.request.image();
  v1::ImageProbe* probe = out->add_images();
  probe->set_image(image);
  auto cannot_see = [&](const std::string& why) {
    probe->set_error(why);
    out->add_unavailable(absl::StrCat("image ", image, ": ", why));
  };
  if (!ctx.live) {
    cannot_see(absl::StrCat("not probed: ", ctx.root,
                            " is a recorded tree, and docker describes "
                            "only the running machine"));
    return;
  }
  absl::StatusOr<ProbeCommandResult> run = RunProbeCommand(
      *DefaultProcessRunner(), {ctx.docker, "image", "inspect", "--format", "{{json .}}", image},
      {}, kInspectTimeout);
  if (!run.ok()) {
    cannot_see(absl::StrCat("docker CLI ", ctx.docker, ": ", run.status().message(),
                            " (install Docker: apt-get install docker.io)"));
    return;
  }
  std::string output(absl::StripAsciiWhitespace(run->output));
  if (!Exited0(run->wait_status)) {
    if (absl::StrContains(output, "No such image")) {
      probe->set_error(absl::StrCat("image ", image, " not present on ", ctx.node_name,
                                    ": docker pull ", image, " (or fleet stage image ", image,
                                    ")"));
    } else if (absl::StrContains(output, "Cannot connect to the Docker daemon")) {
      cannot_see(absl::StrCat("no Docker engine answers on ", ctx.node_name,
                              " (systemctl start docker): ", output));
    } else {
      cannot_see(absl::StrCat("docker image inspect ", DescribeWaitStatus(run->wait_status), ": ",
                              output));
    }
    return;
  }
  nlohmann::json inspect = nlohmann::json::parse(output, nullptr, /*allow_exceptions=*/false);
  if (inspect.is_discarded() || !inspect.is_object() || !inspect.contains("Id") ||
      !inspect["Id"].is_string()) {
    cannot_see(absl::StrCat("docker image inspect printed no image Id: ", output.substr(0, 200)));
    return;
  }
  probe->set_present(true);
  probe->set_id(inspect["Id"].get<std::string>());
  if (auto digests = inspect.find("RepoDigests"); digests != inspect.end() && digests->is_array()) {
    for (const nlohmann::json& digest : *digests) {
      if (digest.is_string()) probe->add_repo_digests(digest.get<std::string>());
    }
  }
  if (auto config = inspect.find("Config"); config != inspect.end() && config->is_object()) {
    if (auto entry = config->find("Entrypoint"); entry != config->end() && entry->is_array()) {
      for (const nlohmann::json& word : *entry) {
        if (word.is_string()) probe->add_entrypoint(word.get<std::string>());
      }
    }
  }
}

// Where a model path of the request lives on this node (see ProbeArtifacts), or why it has no
// place: FailedPrecondition with the fix.
absl::StatusOr<std::string> ResolveModelPath(const ProbeContext& ctx, const std::string& spec) {
  auto home = [&]() -> absl::StatusOr<std::string> {
    const char* value = std::getenv("HOME");
    if (value == nullptr || *value == '\0') {
      return absl::FailedPreconditionError(
          absl::StrCat("model ", spec,
                       ": HOME is not set, so ~ has no meaning; give an "
                       "absolute path"));
    }
    return std::string(value);
  };
  auto under_root = [&](const std::string& path) {
    return ctx.root == "/" || ctx.root.empty()
               ? path
               : absl::StrCat(absl::StripSuffix(ctx.root, "/"), path);
  };
  if (absl::StartsWith(spec, "/")) return under_root(spec);
  if (absl::StartsWith(spec, "~/")) {
    ASSIGN_OR_RETURN(std::string dir, home());
    return under_root(absl::StrCat(dir, spec.substr(1)));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(spec, '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty() ||
      absl::StartsWith(parts[0], ".")) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", spec,
                     ": neither an absolute path, ~/PATH nor a Hugging Face id "
                     "ORG/NAME"));
  }
  ASSIGN_OR_RETURN(std::string dir, home());
  std::string repo =
      under_root(absl::StrCat(dir, "/.cache/huggingface/hub/models--", parts[0], "--", parts[1]));
  std::error_code ec;
  if (!std::filesystem::is_directory(repo, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("model ", spec,
                                                      " is not in the Hugging Face cache (no ",
                                                      repo, "): huggingface-cli download ", spec));
  }
  absl::StatusOr<std::string> ref = ReadFileToString(absl::StrCat(repo, "/refs/main"));
  if (!ref.ok()) return repo;
  std::string snapshot = absl::StrCat(repo, "/snapshots/", absl::StripAsciiWhitespace(*ref));
  return std::filesystem::is_directory(snapshot, ec) ? snapshot : repo;
}

struct ModelFile {
  std::string relative;
  std::string path;
  uint64_t size = 0;
};

struct ModelTree {
  std::vector<ModelFile> files;  // sorted by `relative`
  uint64_t total_bytes = 0;
  int64_t newest_mtime_ns = 0;
};

int64_t MtimeNs(const struct stat& st) {
  return int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// Every regular file beneath `dir` (or `dir` itself when it is one file), following symlinks to
// files but not to directories, so a link loop cannot trap the walk.
absl::StatusOr<ModelTree> WalkModel(const std::string& dir) {
  ModelTree tree;
  struct stat top {};
  if (::stat(dir.c_str(), &top) != 0) return ErrnoStatus(dir);
  tree.newest_mtime_ns = MtimeNs(top);
  if (S_ISREG(top.st_mode)) {
    tree.files.push_back({.relative = std::filesystem::path(dir).filename().string(),
                          .path = dir,
                          .size = static_cast<uint64_t>(top.st_size)});
    tree.total_bytes = top.st_size;
    return tree;
  }
  if (!S_ISDIR(top.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " is neither a directory nor a file"));
  }
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(dir, ec);
  for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::string path = it->path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("lstat ", path));
    if (S_ISLNK(st.st_mode)) {
      if (::stat(path.c_str(), &st) != 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "broken symlink ", path, " (an interrupted download?): fetch the model again"));
      }
      if (!S_ISREG(st.st_mode)) continue;
    } else if (S_ISDIR(st.st_mode)) {
      tree.newest_mtime_ns = std::max(tree.newest_mtime_ns, MtimeNs(st));
      continue;
    } else if (!S_ISREG(st.st_mode)) {
      continue;
    }
    tree.newest_mtime_ns = std::max(tree.newest_mtime_ns, MtimeNs(st));
    tree.total_bytes += st.st_size;
    tree.files.push_back({.relative = it->path().lexically_relative(dir).string(),
                          .path = std::move(path),
                          .size = static_cast<uint64_t>(st.st_size)});
  }
  if (ec) return ErrnoStatus(absl::StrCat("read ", dir), ec.value());
  std::sort(tree.files.begin(), tree.files.end(),
            [](const ModelFile& a, const ModelFile& b) { return a.relative < b.relative; });
  return tree;
}

std::string Hex(const unsigned char* data, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * size);
  for (size_t i = 0; i < size; ++i) {
    hex.push_back(kDigits[data[i] >> 4]);
    hex.push_back(kDigits[data[i] & 0xf]);
  }
  return hex;
}

struct DigestDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using DigestContext = std::unique_ptr<EVP_MD_CTX, DigestDeleter>;

absl::StatusOr<DigestContext> NewSha256() {
  DigestContext digest(EVP_MD_CTX_new());
  if (digest == nullptr || EVP_DigestInit_ex(digest.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("OpenSSL: cannot start a SHA-256 digest");
  }
  return digest;
}

std::string FinishSha256(EVP_MD_CTX* digest) {
  unsigned char sum[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(digest, sum, &size);
  return Hex(sum, size);
}

std::string Sha256Of(absl::string_view data) {
  absl::StatusOr<DigestContext> digest = NewSha256();
  if (!digest.ok()) return "";
  EVP_DigestUpdate(digest->get(), data.data(), data.size());
  return FinishSha256(digest->get());
}

// The content hash documented at ProbeArtifacts.
absl::StatusOr<std::string> HashModel(const ModelTree& tree) {
  ASSIGN_OR_RETURN(DigestContext digest, NewSha256());
  std::vector<char> buffer(kHashChunk);
  for (const ModelFile& file : tree.files) {
    std::string header =
        absl::StrCat(file.relative, std::string(1, '\0'), file.size, std::string(1, '\0'));
    EVP_DigestUpdate(digest.get(), header.data(), header.size());
    int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(absl::StrCat("open ", file.path));
    uint64_t read_total = 0;
    for (;;) {
      ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        absl::Status status = ErrnoStatus(absl::StrCat("read ", file.path));
        ::close(fd);
        return status;
      }
      if (n == 0) break;
      EVP_DigestUpdate(digest.get(), buffer.data(), n);
      read_total += n;
    }
    ::close(fd);
    if (read_total != file.size) {
      return absl::AbortedError(absl::StrCat(file.path, " changed while it was hashed (", file.size,
                                             " bytes, then ", read_total,
                                             "): probe again once the copy is done"));
    }
  }
  return FinishSha256(digest.get());
}

// The cache entry of a model directory: the hash is valid while every key field matches.
nlohmann::json CacheKey(const std::string& path, const ModelTree& tree) {
  return {{"path", path},
          {"total_bytes", tree.total_bytes},
          {"file_count", tree.files.size()},
          {"newest_mtime_ns", tree.newest_mtime_ns}};
}

std::string CachePath(const ProbeContext& ctx, const std::string& path) {
  return absl::StrCat(ctx.cache_dir, "/model-", Sha256Of(path), ".json");
}

std::optional<std::string> CachedHash(const ProbeContext& ctx, const std::string& path,
                                      const ModelTree& tree) {
  if (ctx.cache_dir.empty()) return std::nullopt;
  absl::StatusOr<std::string> text = ReadFileToString(CachePath(ctx, path));
  if (!text.ok()) return std::nullopt;
  nlohmann::json entry = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!entry.is_object() || !entry.contains("sha256") || !entry["sha256"].is_string()) {
    return std::nullopt;
  }
  std::string sha256 = entry["sha256"].get<std::string>();
  entry.erase("sha256");
  if (entry != CacheKey(path, tree)) return std::nullopt;
  return sha256;
}

// The hash is right either way, so a cache that cannot be written costs only a later rehash;
// the caller reports it as unavailable so the operator learns why hashing repeats.
absl::Status StoreHash(const ProbeContext& ctx, const std::string& path, const ModelTree& tree,
                       const std::string& sha256) {
  if (ctx.cache_dir.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(MakeDirectories(ctx.cache_dir, 0700));
  nlohmann::json entry = CacheKey(path, tree);
  entry["sha256"] = sha256;
  return WriteFileAtomically(CachePath(ctx, path), entry.dump(), 0600);
}

void ProbeModel(const ProbeContext& ctx, const std::string& spec, v1::NodeProbe* out) {
  v1::ModelProbe* probe = out->add_models();
  absl::StatusOr<std::string> path = ResolveModelPath(ctx, spec);
  if (!path.ok()) {
    probe->set_path(spec);
    probe->set_error(std::string(path.status().message()));
    return;
  }
  probe->set_path(*path);
  absl::StatusOr<ModelTree> tree = WalkModel(*path);
  if (!tree.ok()) {
    if (absl::IsNotFound(tree.status())) {
      probe->set_error(
          absl::StrCat("model ", spec, ": no such directory ", *path, ": copy the model there"));
    } else {
      probe->set_present(absl::IsFailedPrecondition(tree.status()));
      probe->set_error(absl::StrCat("model ", spec, ": ", tree.status().message()));
    }
    return;
  }
  probe->set_present(true);
  probe->set_total_bytes(tree->total_bytes);
  probe->set_file_count(tree->files.size());
  if (!ctx.request.hash_models()) return;
  if (std::optional<std::string> cached = CachedHash(ctx, *path, *tree)) {
    probe->set_sha256(*cached);
    probe->set_from_cache(true);
    return;
  }
  absl::StatusOr<std::string> sha256 = HashModel(*tree);
  if (!sha256.ok()) {
    probe->set_error(absl::StrCat("model ", spec, ": hash: ", sha256.status().message()));
    return;
  }
  probe->set_sha256(*sha256);
  if (absl::Status stored = StoreHash(ctx, *path, *tree, *sha256); !stored.ok()) {
    out->add_unavailable(absl::StrCat("model cache: ", stored.message()));
  }
}

}  // namespace

absl::StatusOr<ProbeCommandResult> RunProbeCommand(ProcessRunner& runner,
                                                   const std::vector<std::string>& argv,
                                                   const std::vector<std::string>& env,
                                                   absl::Duration timeout) {
  absl::StatusOr<RunResult> run =
      runner.Run({.argv = argv, .env = env, .stderr_to = OutputTo::kStdout}, timeout);
  if (absl::IsDeadlineExceeded(run.status())) {
    return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within ",
                                                    absl::FormatDuration(timeout), "; killed"));
  }
  if (!run.ok()) return run.status();
  return ProbeCommandResult{.wait_status = run->wait_status, .output = std::move(run->out)};
}

void ProbeArtifacts(const ProbeContext& ctx, v1::NodeProbe* out) {
  if (!ctx.request.image().empty()) {
    ProbeImage(ctx, out);
  } else if (ctx.request.runtime() == v1::SHARD_RUNTIME_DOCKER) {
    out->add_unavailable("image: the docker runtime is requested but no image is named");
  }
  for (const std::string& spec : ctx.request.model_paths()) ProbeModel(ctx, spec, out);
}

}  // namespace fleet::agent
