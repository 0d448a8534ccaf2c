// Image and model probes: `docker image inspect`, a walk of each model directory, and its
// content hash: the tree hash of its stage manifest, through the agent's manifest cache.
#include "agent/probes/artifacts.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/stage/manifest.h"
#include "common/files.h"
#include "common/process/process_runner_impl.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace fleet::agent {
namespace {

// `docker image inspect` answers from the local store; seconds only when the engine is busy.
constexpr absl::Duration kInspectTimeout = absl::Seconds(30);

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
  bool single_file = false;  // the model path is one file, not a directory
};

// Every regular file beneath `dir` (or `dir` itself when it is one file), following symlinks to
// files but not to directories, so a link loop cannot trap the walk.
absl::StatusOr<ModelTree> WalkModel(const std::string& dir) {
  ModelTree tree;
  struct stat top {};
  if (::stat(dir.c_str(), &top) != 0) return ErrnoStatus(dir);
  if (S_ISREG(top.st_mode)) {
    tree.single_file = true;
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
      continue;
    } else if (!S_ISREG(st.st_mode)) {
      continue;
    }
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

int64_t MtimeNs(const struct stat& st) {
  return int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The model's content hash: the tree hash of its stage manifest (agent/stage/manifest.h), built
// through the agent's manifest cache, so a tree that `fleet stage model` wrote or scanned is not
// read again. A single model file is hashed as a tree of that one file, cached with its
// directory's entries.
absl::StatusOr<ScannedTree> ModelManifest(const ProbeContext& ctx, const std::string& path,
                                          const ModelTree& tree) {
  if (!tree.single_file) return BuildManifest(path, {.cache_dir = ctx.cache_dir});
  const std::filesystem::path file(path);
  const std::string name = file.filename().string();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(absl::StrCat("stat ", path));
  ScannedTree scanned{.from_cache = true};
  v1::StageManifest& manifest = scanned.manifest;
  manifest.set_root(file.parent_path().string());
  manifest.set_chunk_bytes(kStageChunkBytes);
  manifest.set_total_bytes(static_cast<uint64_t>(st.st_size));
  v1::StageFile* entry = manifest.add_files();
  entry->set_path(name);
  entry->set_size(static_cast<uint64_t>(st.st_size));
  entry->set_mode(st.st_mode & 07777);
  entry->set_mtime_ns(MtimeNs(st));
  ManifestCache cache(ctx.cache_dir, manifest.root());
  const uint64_t chunks = (entry->size() + kStageChunkBytes - 1) / kStageChunkBytes;
  const v1::StageFile* cached = cache.Lookup(name, entry->size(), entry->mtime_ns());
  if (cached != nullptr && static_cast<uint64_t>(cached->chunk_sha256_size()) == chunks) {
    *entry->mutable_chunk_sha256() = cached->chunk_sha256();
  } else {
    scanned.from_cache = false;
    ASSIGN_OR_RETURN(std::vector<std::string> hashes,
                     HashFileChunks(path, entry->size(), kStageChunkBytes));
    if (hashes.size() != chunks) {
      return absl::AbortedError(
          absl::StrCat(path, " changed while it was hashed: probe again once the copy is done"));
    }
    for (std::string& h : hashes) entry->add_chunk_sha256(std::move(h));
    cache.Put(*entry);
    // The hash is right either way; a cache that cannot be written costs only a later rehash.
    (void)cache.Save();
  }
  manifest.set_tree_sha256(TreeSha256(manifest));
  return scanned;
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
  absl::StatusOr<ScannedTree> scanned = ModelManifest(ctx, *path, *tree);
  if (!scanned.ok()) {
    probe->set_error(absl::StrCat("model ", spec, ": hash: ", scanned.status().message()));
    return;
  }
  probe->set_sha256(scanned->manifest.tree_sha256());
  probe->set_from_cache(scanned->from_cache);
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
