// StageRunner: `fleet stage model` (and `fleet stage image`, see RunImage) on the controller.
// It scans the tree on the source node, plans the chain FROM -> n1 -> n2 -> ... over the nodes'
// fabric addresses with a one-time token per link, asks each target what it lacks (last first, so
// each hop knows what to pass on), has the source send the union once, and collects each node's
// end. Chunks that failed verification (or never arrived) are sent again in a further round, at
// most three; a node that fails is left out of later rounds so the others still complete. Plain
// class: the Controller service calls it on its stage executor. The current or last run is kept
// in the Store, so `fleet stage status` shows it after a controller restart (a run that was in
// flight then shows as "interrupted").
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "controller/stage/stage_agent_client.h"
#include "controller/store/store.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/stage.pb.h"

namespace fleet::controller {

struct ReadyEndpoints;  // controller/fabric/fabric_runner.h

// What a run tells the controller's metrics (controller/metrics); either may be empty.
struct StageRunEvents {
  std::function<void(const std::string& kind)> started;  // "model" or "image"
  std::function<void(const v1::StageRun& run)> ended;    // the run in its final state
};

// Example:
//   StageRunner runner(clock, &agents, &store);
//   RETURN_IF_ERROR(runner.Load());
//   ASSIGN_OR_RETURN(v1::StageModelResponse done, runner.Run(request, registry.List()));
class StageRunner {
 public:
  // `store` (may be null: nothing kept across restarts) keeps the last run.
  StageRunner(const Clock* clock, StageAgentClient* agents, Store* store = nullptr,
              StageRunEvents events = {})
      : clock_(clock), agents_(agents), store_(store), events_(std::move(events)) {}

  // Reads the last run from the store. A run stored in flight (the controller stopped during
  // it) becomes "interrupted", each unfinished node too, and is written back so.
  absl::Status Load();

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
  // The current or last run (kept in the store too; see Load).
  v1::StageStatusResponse Status();
  // `fleet stage cancel`: stops the run in flight. Every target prepared so far is told
  // StageFinish{abort} (its data port and streams close; verified chunks stay under temporary
  // names, so the next run resumes), the source's send ends as its first hop closes, and the run
  // ends with state "cancelled", each unfinished node "cancelled"; a source still hashing the
  // tree stops (its files hashed whole stay cached for the next scan). Waits up to 60 s for the
  // run to end and answers the run as it then stands. FailedPrecondition when no run is in
  // flight.
  absl::StatusOr<v1::StageCancelResponse> Cancel();

 private:
  // A target whose transfer is open in the current round: what an abort needs.
  struct Opened {
    std::string agent_address;
    std::string node_id;
    std::string transfer_id;
  };
  // Marks a run in flight for Cancel while it lives (Run and RunImage hold one).
  class InFlight {
   public:
    InFlight(StageRunner* runner, bool image);
    ~InFlight();
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

   private:
    StageRunner* const runner_;
  };

  void Publish(const v1::StageRun& run);
  bool CancelRequested();
  // Records a transfer that Cancel must abort.
  void TrackOpened(const std::string& agent_address, const std::string& node_id,
                   const std::string& transfer_id);
  // Tells every opened transfer to abort (idempotent: an agent that no longer has it answers
  // NotFound, which is ignored).
  void AbortOpened();
  // Runs `send` (the source's send, which blocks for the whole transfer) on a thread of its
  // own, and until it returns, every kPollEvery: aborts the opened transfers once a cancel is
  // asked, calls `poll` (each target's progress into `run`), and publishes `run` with its
  // seconds since `start`. Returns what `send` returned.
  absl::StatusOr<v1::StageSendResponse> SendWhilePolling(
      absl::AnyInvocable<absl::StatusOr<v1::StageSendResponse>()> send,
      absl::FunctionRef<void()> poll, v1::StageRun& run, absl::Time start);
  // Each target's answer to its final StageFinish{wait} and when it came.
  template <typename Response>
  struct FinishAnswer {
    absl::StatusOr<Response> answer = absl::UnknownError("not asked");
    absl::Time at;
  };
  // Calls `finish(i)` for every i < n at once, each on a thread of its own: the targets verify,
  // fsync and load at the same time, where one after another the last node of a fan-out would
  // wait for every other node's end.
  template <typename Response>
  std::vector<FinishAnswer<Response>> FinishAll(
      size_t n, absl::FunctionRef<absl::StatusOr<Response>(size_t)> finish) {
    std::vector<FinishAnswer<Response>> ended(n);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        ended[i].answer = finish(i);
        ended[i].at = clock_->Now();
      });
    }
    for (std::thread& t : threads) t.join();
    return ended;
  }
  // Ends `run` as cancelled: every node not done or failed is "cancelled".
  void EndCancelled(v1::StageRun& run, absl::Time start);
  // Every node of `to` named once and Ready, and `from` (when named) Ready and not a target:
  // the checks a model and an image run share. Returns the targets.
  static absl::StatusOr<std::set<std::string>> CheckFromAndTo(
      const ReadyEndpoints& ready, const google::protobuf::RepeatedPtrField<std::string>& to,
      const std::string& from);

  const Clock* const clock_;
  StageAgentClient* const agents_;
  Store* const store_;
  const StageRunEvents events_;
  absl::Mutex run_mu_;  // held for a whole run
  absl::Mutex status_mu_;
  std::optional<v1::StageRun> last_ ABSL_GUARDED_BY(status_mu_);
  bool in_flight_ ABSL_GUARDED_BY(status_mu_) = false;
  bool in_flight_image_ ABSL_GUARDED_BY(status_mu_) = false;
  // Notified by Cancel; a fresh one for each run (a scan in flight waits on it too).
  std::shared_ptr<absl::Notification> cancel_ ABSL_GUARDED_BY(status_mu_);
  std::vector<Opened> opened_ ABSL_GUARDED_BY(status_mu_);
  // The state last written to the store in this run ("" before its first write): a run is
  // stored when its state changes, not on every progress poll.
  std::string stored_state_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace fleet::controller
