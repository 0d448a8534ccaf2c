// StageRunner: `fleet stage model` (and `fleet stage image`, see RunImage) on the controller.
// It scans the tree on the source node, plans the chain FROM -> n1 -> n2 -> ... over the nodes'
// fabric addresses with a one-time token per link, asks each target what it lacks (last first, so
// each hop knows what to pass on), has the source send the union once, and collects each node's
// end. Chunks that failed verification (or never arrived) are sent again in a further round, at
// most three; a node that fails is left out of later rounds so the others still complete. Plain
// class: the Controller service calls it on its stage executor.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "controller/stage/stage_agent_client.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/stage.pb.h"

namespace fleet::controller {

struct ReadyEndpoints;  // controller/fabric/fabric_runner.h

// Example:
//   StageRunner runner(clock, &agents);
//   ASSIGN_OR_RETURN(v1::StageModelResponse done, runner.Run(request, registry.List()));
class StageRunner {
 public:
  StageRunner(const Clock* clock, StageAgentClient* agents) : clock_(clock), agents_(agents) {}

  // Blocking for the whole copy; one run at a time (a second waits). InvalidArgument for bad
  // flags, FailedPrecondition for a node that is not Ready or a source without the path. A run
  // whose copy failed on some node answers OK with that node's state "failed" and its error.
  absl::StatusOr<v1::StageModelResponse> Run(const v1::StageModelRequest& request,
                                             const std::vector<v1::Node>& nodes);
  // `fleet stage image` (image_run.cc): asks every target for the image's ID, skips those that
  // have the source's, has the source stream `docker save` through a chain of the others into
  // `docker load`, and compares each loaded ID with the source's. The same errors as Run, plus
  // FailedPrecondition when no source has the image; a target whose docker is missing, whose
  // load fails or whose ID differs answers OK with that node "failed" and the reason. Shares
  // Run's lock and Status().
  absl::StatusOr<v1::StageImageResponse> RunImage(const v1::StageImageRequest& request,
                                                  const std::vector<v1::Node>& nodes);
  // The current or last run (kept in memory; a restarted controller has none).
  v1::StageStatusResponse Status();

 private:
  void Publish(const v1::StageRun& run);
  // Every node of `to` named once and Ready, and `from` (when named) Ready and not a target:
  // the checks a model and an image run share. Returns the targets.
  static absl::StatusOr<std::set<std::string>> CheckFromAndTo(
      const ReadyEndpoints& ready, const google::protobuf::RepeatedPtrField<std::string>& to,
      const std::string& from);

  const Clock* const clock_;
  StageAgentClient* const agents_;
  absl::Mutex run_mu_;  // held for a whole run
  absl::Mutex status_mu_;
  std::optional<v1::StageRun> last_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace fleet::controller
