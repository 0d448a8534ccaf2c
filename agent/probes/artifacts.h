// The artifacts a recipe names, as this node has them: the container image (Docker's image ID
// and repo digests) and the model directories (size, file count and an optional content hash,
// the stage manifest's tree hash, cached so an unchanged file is hashed once).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/probes/probe_context.h"
#include "common/process/process_runner.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::agent {

// Appends one ImageProbe for ctx.request.image() (when set) and one ModelProbe per
// ctx.request.model_paths() entry, in order. A model path is
//   - absolute: that directory (or single model file);
//   - "~/rest": $HOME/rest;
//   - a Hugging Face id "org/name": the snapshot that refs/main names under
//     $HOME/.cache/huggingface/hub/models--org--name (the directory itself when refs/main is
//     absent), where `huggingface-cli download` and vLLM keep it.
// ModelProbe.path is the directory resolved that way (beneath ctx.root when that is not "/").
// With request.hash_models, ModelProbe.sha256 is the tree hash of the directory's stage manifest
// (agent/stage/manifest.h: every regular file, symlinked files included — a Hugging Face
// snapshot is all symlinks into blobs/ — symlinked directories not followed, each file's path,
// size, mode and 8 MiB chunk hashes), the hash `fleet stage model` reports as tree_sha256; a
// single model file is hashed as a tree of that one file. Chunk hashes come from the manifest
// cache in ctx.cache_dir, the one staging uses, while a file's (path, size, mtime) hold, so a
// tree that `fleet stage model` wrote here is not read again (ModelProbe.from_cache: no content
// was read).
//
// Example:
//   ProbeContext ctx{.cache_dir = "/var/lib/fleet/stage-cache"};
//   ctx.request.add_model_paths("~/models/Qwen3-32B");
//   ctx.request.set_hash_models(true);
//   ProbeArtifacts(ctx, &probe);  // probe.models(0).sha256() == "9f2c..."
void ProbeArtifacts(const ProbeContext& ctx, v1::NodeProbe* out);

// A finished command of a probe: its wait status and its stdout and stderr, interleaved.
struct ProbeCommandResult {
  int wait_status = 0;
  std::string output;
};

// Runs `argv` with `env` ("KEY=VALUE" entries over the inherited environment) through `runner`
// (DefaultProcessRunner() on a node, a fake in tests) and collects its output. DeadlineExceeded
// (the process killed) past `timeout`; the error of exec (NotFound for a missing program) when
// it cannot start. Shared by the device probes, which run docker and fleet-nccl-probe.
absl::StatusOr<ProbeCommandResult> RunProbeCommand(ProcessRunner& runner,
                                                   const std::vector<std::string>& argv,
                                                   const std::vector<std::string>& env,
                                                   absl::Duration timeout);

}  // namespace fleet::agent
