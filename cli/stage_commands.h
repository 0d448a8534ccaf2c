// `fleet stage model`, `fleet stage image`, `fleet stage status` and `fleet stage cancel`: copy a
// model directory or a Docker image from one node to others through the controller's staging
// chain, with live progress on a terminal, show the current or last run, and stop one.
#pragma once

#include <string>
#include <vector>

#include "cli/commands.h"
#include "fleet/v1/stage.pb.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {

struct StageFlags {
  std::string path;             // the model directory on the source node
  std::string from;             // --from NODE
  std::vector<std::string> to;  // --to a,b
  std::string dest;             // --dest PATH
  uint32_t streams = 4;         // --streams (1..16)
};

struct StageImageFlags {
  std::string ref;              // the image, as docker names it
  std::string from;             // --from NODE
  std::vector<std::string> to;  // --to a,b
};

// Exit code 0 when every target holds the tree (the image), 1 when one failed, 2 for bad flags.
int StageModel(const Globals& g, const StageFlags& flags);
int StageImage(const Globals& g, const StageImageFlags& flags);
int StageStatus(const Globals& g);
// `fleet stage cancel`: stops the run in flight and prints it as it ended ("cancelled"); exit
// code 1 with the controller's reason when none is in flight.
int StageCancel(const Globals& g);

// `-o json` of a run (keys: apiVersion, kind, id, source, from, state, error, rounds, seconds,
// nodes: [{node, dest, files, bytes, bytes_sent, seconds, tree_sha256, chunks_rejected,
// bytes_done, bytes_needed, state, error}]); bytes_done of bytes_needed is the progress of a run
// still copying. An image run (kind "image") has "stage": "image", and per node: node, image_id,
// skipped, bytes_sent, seconds, bytes_done, bytes_needed, state, error.
nlohmann::ordered_json StageRunJson(const v1::StageRun& run);
// The table of a run, one row per target.
std::string RenderStageRun(const v1::StageRun& run);
// One progress line per target: bytes done of needed, the rate since the last look and the
// time left at that rate.
std::string RenderStageProgress(const v1::StageRun& run, const v1::StageRun* previous,
                                double interval_seconds);

}  // namespace fleet::cli
