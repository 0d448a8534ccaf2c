// StageRunner: plan, rounds, progress and results of a staging run.
#include "controller/stage/stage_runner.h"

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/host_port.h"
#include "common/pki.h"
#include "common/status_macros.h"
#include "controller/fabric/fabric_runner.h"

namespace fleet::controller {
namespace {

constexpr int kMaxRounds = 3;
constexpr absl::Duration kScanDeadline = absl::Hours(2);  // a first scan hashes the whole tree
constexpr absl::Duration kPrepareDeadline = absl::Hours(1);
constexpr absl::Duration kCopyDeadline = absl::Hours(12);
constexpr absl::Duration kPollDeadline = absl::Seconds(5);
// How often progress is read from the targets while the source sends.
constexpr absl::Duration kPollEvery = absl::Milliseconds(500);
// An abort closes sockets (and kills a docker load): seconds at most.
constexpr absl::Duration kAbortDeadline = absl::Seconds(40);
// How long `fleet stage cancel` waits for the run to end before answering it as it stands.
constexpr absl::Duration kCancelWait = absl::Seconds(60);

struct Target {
  FabricEndpoint endpoint;
  v1::StageNodeResult* result = nullptr;
  bool failed = false;
  uint64_t missing = 0;
  uint64_t round_base = 0;  // bytes_sent before this round
  uint32_t rejected_base = 0;
};

bool Ended(const std::string& state) {
  return state == "done" || state == "failed" || state == "cancelled" || state == "interrupted";
}

}  // namespace

v1::StageStatusResponse StageRunner::Status() {
  absl::MutexLock lock(&status_mu_);
  v1::StageStatusResponse response;
  if (last_.has_value()) *response.mutable_run() = *last_;
  return response;
}

void StageRunner::Publish(const v1::StageRun& run) {
  absl::MutexLock lock(&status_mu_);
  last_ = run;
  if (store_ != nullptr && run.state() != stored_state_) {
    // `fleet stage status` after a restart is all the store serves; a failed write costs only
    // that view, never the copy.
    (void)store_->PutLastStageRun(run);
    stored_state_ = run.state();
  }
}

absl::Status StageRunner::Load() {
  if (store_ == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::optional<v1::StageRun> last, store_->LoadLastStageRun());
  if (!last.has_value()) return absl::OkStatus();
  if (!Ended(last->state())) {
    for (v1::StageNodeResult& node : *last->mutable_nodes()) {
      if (node.state() != "done" && node.state() != "failed") node.set_state("interrupted");
    }
    last->set_state("interrupted");
    last->set_error(
        "the controller stopped while this run was in flight; run the same command again: the "
        "targets keep the chunks they verified, so it resumes");
    RETURN_IF_ERROR(store_->PutLastStageRun(*last));
  }
  absl::MutexLock lock(&status_mu_);
  last_ = std::move(last);
  return absl::OkStatus();
}

StageRunner::InFlight::InFlight(StageRunner* runner, bool image) : runner_(runner) {
  {
    absl::MutexLock lock(&runner_->status_mu_);
    runner_->in_flight_ = true;
    runner_->in_flight_image_ = image;
    runner_->cancel_ = std::make_shared<absl::Notification>();
    runner_->opened_.clear();
    runner_->stored_state_.clear();
  }
  if (runner_->events_.started) runner_->events_.started(image ? "image" : "model");
}

StageRunner::InFlight::~InFlight() {
  v1::StageRun last;
  {
    absl::MutexLock lock(&runner_->status_mu_);
    runner_->in_flight_ = false;
    runner_->opened_.clear();
    // Every path of a run publishes it before it returns: this is the run as it ended.
    if (runner_->last_.has_value()) last = *runner_->last_;
  }
  if (runner_->events_.ended) runner_->events_.ended(last);
}

bool StageRunner::CancelRequested() {
  absl::MutexLock lock(&status_mu_);
  return cancel_ != nullptr && cancel_->HasBeenNotified();
}

void StageRunner::TrackOpened(const std::string& agent_address, const std::string& node_id,
                              const std::string& transfer_id) {
  absl::MutexLock lock(&status_mu_);
  opened_.push_back(
      {.agent_address = agent_address, .node_id = node_id, .transfer_id = transfer_id});
}

absl::StatusOr<v1::StageSendResponse> StageRunner::SendWhilePolling(
    absl::AnyInvocable<absl::StatusOr<v1::StageSendResponse>()> send,
    absl::FunctionRef<void()> poll, v1::StageRun& run, absl::Time start) {
  absl::StatusOr<v1::StageSendResponse> sent = absl::UnknownError("not sent");
  absl::Notification send_done;
  std::thread sender([&] {
    sent = send();
    send_done.Notify();
  });
  bool aborted = false;
  while (!send_done.WaitForNotificationWithTimeout(kPollEvery)) {
    // Cancel aborts the targets itself; this covers an abort that did not reach one.
    if (!aborted && CancelRequested()) {
      AbortOpened();
      aborted = true;
    }
    poll();
    run.set_seconds(absl::ToDoubleSeconds(clock_->Now() - start));
    Publish(run);
  }
  sender.join();
  return sent;
}

void StageRunner::AbortOpened() {
  std::vector<Opened> opened;
  bool image = false;
  {
    absl::MutexLock lock(&status_mu_);
    opened = opened_;
    image = in_flight_image_;
  }
  for (const Opened& o : opened) {
    v1::StageFinishRequest abort;
    abort.set_transfer_id(o.transfer_id);
    abort.set_abort(true);
    // An agent that is gone or has forgotten the transfer has nothing left to close.
    if (image) {
      (void)agents_->FinishImage(o.agent_address, o.node_id, abort, kAbortDeadline);
    } else {
      (void)agents_->Finish(o.agent_address, o.node_id, abort, kAbortDeadline);
    }
  }
}

void StageRunner::EndCancelled(v1::StageRun& run, absl::Time start) {
  AbortOpened();
  const double seconds = absl::ToDoubleSeconds(clock_->Now() - start);
  for (v1::StageNodeResult& node : *run.mutable_nodes()) {
    if (node.state() == "done" || node.state() == "failed") continue;
    node.set_state("cancelled");
    node.set_bytes_sent(std::max(node.bytes_sent(), node.bytes_done()));
    node.set_seconds(seconds);
  }
  run.set_state("cancelled");
  run.set_error(
      "cancelled by `fleet stage cancel`; the targets keep the chunks they verified (under "
      "temporary names), so the next run resumes");
  run.set_seconds(seconds);
  Publish(run);
}

absl::StatusOr<v1::StageCancelResponse> StageRunner::Cancel() {
  {
    absl::MutexLock lock(&status_mu_);
    if (!in_flight_) {
      return absl::FailedPreconditionError(
          "no stage run in flight; `fleet stage status` shows the last one");
    }
    if (!cancel_->HasBeenNotified()) cancel_->Notify();
  }
  // Closing the targets' ports ends the source's send, which is what the run is waiting on.
  AbortOpened();
  absl::MutexLock lock(&status_mu_);
  auto ended = [this]() ABSL_SHARED_LOCKS_REQUIRED(status_mu_) { return !in_flight_; };
  status_mu_.AwaitWithTimeout(absl::Condition(&ended), kCancelWait);
  v1::StageCancelResponse response;
  if (last_.has_value()) *response.mutable_run() = *last_;
  return response;
}

absl::StatusOr<std::set<std::string>> StageRunner::CheckFromAndTo(
    const ReadyEndpoints& ready, const google::protobuf::RepeatedPtrField<std::string>& to,
    const std::string& from) {
  std::set<std::string> seen;
  for (const std::string& name : to) {
    RETURN_IF_ERROR(ready.Require(name));
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("node ", name, " is named twice in --to"));
    }
  }
  if (!from.empty()) {
    RETURN_IF_ERROR(ready.Require(from));
    if (seen.contains(from)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--from ", from, " is also a target; leave it out of --to"));
    }
  }
  return seen;
}

absl::StatusOr<v1::StageModelResponse> StageRunner::Run(const v1::StageModelRequest& request,
                                                        const std::vector<v1::Node>& nodes) {
  if (request.path().empty() || request.path()[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("the model path must be absolute; got `",
                                                   request.path(), "`: pass e.g. /srv/models/x"));
  }
  if (!request.dest().empty() && request.dest()[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--dest must be absolute; got `", request.dest(), "`"));
  }
  if (request.to().empty()) {
    return absl::InvalidArgumentError("name the target nodes: --to node-2,node-3");
  }
  const uint32_t streams = request.streams() == 0 ? 4 : request.streams();
  if (streams > 16) {
    return absl::InvalidArgumentError(absl::StrCat("--streams must be 1..16; got ", streams));
  }
  const ReadyEndpoints ready = ReadyEndpointsOf(nodes);
  ASSIGN_OR_RETURN(const std::set<std::string> seen,
                   CheckFromAndTo(ready, request.to(), request.from()));

  absl::MutexLock run_lock(&run_mu_);
  InFlight in_flight(this, /*image=*/false);
  const absl::Time start = clock_->Now();
  v1::StageRun run;
  run.set_id(absl::StrCat("stage-", absl::ToUnixMillis(start)));
  run.set_kind("model");
  run.set_source(request.path());
  run.set_state("planning");
  const std::string dest = request.dest().empty() ? request.path() : request.dest();

  // Shown while the source scans: a first scan of a large tree takes minutes.
  Publish(run);
  // Ends the run as cancelled, each node not done or failed "cancelled".
  auto cancelled = [&] {
    EndCancelled(run, start);
    v1::StageModelResponse response;
    *response.mutable_run() = run;
    return response;
  };

  // The source: the named node, else the first Ready non-target that has the path.
  v1::StageScanRequest scan;
  scan.set_path(request.path());
  std::optional<FabricEndpoint> from;
  absl::StatusOr<v1::StageScanResponse> scanned = absl::NotFoundError("no source");
  std::vector<std::string> tried;
  std::shared_ptr<absl::Notification> cancel;
  {
    absl::MutexLock lock(&status_mu_);
    cancel = cancel_;
  }
  for (const std::string& name : ready.names) {
    if (request.from().empty() ? seen.contains(name) : name != request.from()) continue;
    if (cancel->HasBeenNotified()) break;
    const FabricEndpoint& e = ready.by_name.at(name);
    scanned = agents_->Scan(e.agent_address, e.node_id, scan, kScanDeadline, *cancel);
    if (scanned.ok()) {
      from = e;
      break;
    }
    tried.push_back(absl::StrCat(name, ": ", scanned.status().message()));
  }
  if (!from.has_value() && cancel->HasBeenNotified()) {
    // Cancelled while the source hashed the tree: nothing was sent; what it hashed is cached.
    for (const std::string& name : request.to()) run.add_nodes()->set_node(name);
    return cancelled();
  }
  if (!from.has_value()) {
    run.set_state("failed");
    run.set_error(absl::StrCat("no source for ", request.path(), " (", absl::StrJoin(tried, "; "),
                               "); put it on a node and pass --from NODE"));
    Publish(run);
    return absl::FailedPreconditionError(run.error());
  }
  const v1::StageManifest manifest = scanned->manifest();
  run.set_from(from->name);

  std::vector<Target> targets;
  for (const std::string& name : request.to()) {
    v1::StageNodeResult* r = run.add_nodes();
    r->set_node(name);
    r->set_state("pending");
    r->set_bytes(manifest.total_bytes());
    r->set_files(static_cast<uint32_t>(manifest.files_size()));
  }
  for (int i = 0; i < run.nodes_size(); ++i) {
    targets.push_back(
        {.endpoint = ready.by_name.at(run.nodes(i).node()), .result = run.mutable_nodes(i)});
  }
  Publish(run);

  auto fail = [&](Target& t, const std::string& error) {
    t.failed = true;
    t.result->set_state("failed");
    t.result->set_error(error);
    t.result->set_seconds(absl::ToDoubleSeconds(clock_->Now() - start));
  };
  for (int round = 1; round <= kMaxRounds; ++round) {
    if (CancelRequested()) return cancelled();
    std::vector<Target*> chain;
    for (Target& t : targets) {
      if (!t.failed && (round == 1 || t.missing > 0)) chain.push_back(&t);
    }
    if (chain.empty()) break;
    run.set_rounds(round);
    const std::string transfer_id = absl::StrCat(run.id(), "-", round);
    // Last hop first, so each hop learns what the nodes after it lack.
    std::set<uint32_t> below;
    std::string next_target;
    std::string next_token;
    std::vector<Target*> prepared;
    for (int k = static_cast<int>(chain.size()) - 1; k >= 0 && !CancelRequested(); --k) {
      Target& t = *chain[k];
      v1::StagePrepareRequest prepare;
      prepare.set_transfer_id(transfer_id);
      *prepare.mutable_manifest() = manifest;
      prepare.set_dest(dest);
      prepare.set_token(pki::RandomBytes(32));
      prepare.set_bind_ip(t.endpoint.ip);
      prepare.set_streams(streams);
      if (!next_target.empty()) {
        v1::StageForward* fwd = prepare.mutable_forward();
        fwd->set_target(next_target);
        fwd->set_token(next_token);
        fwd->set_source_ip(t.endpoint.ip);
        for (uint32_t g : below) fwd->add_chunks(g);
      }
      // The upstream: the previous target in the chain, else the source.
      prepare.set_peer_ip(k > 0 ? chain[k - 1]->endpoint.ip : from->ip);
      absl::StatusOr<v1::StagePrepareResponse> p =
          agents_->Prepare(t.endpoint.agent_address, t.endpoint.node_id, prepare, kPrepareDeadline);
      if (!p.ok()) {
        fail(t, std::string(p.status().message()));
        continue;
      }
      TrackOpened(t.endpoint.agent_address, t.endpoint.node_id, transfer_id);
      t.result->set_dest(p->real_dest());
      t.result->set_bytes_needed(p->bytes_needed());
      t.result->set_state(p->needed_size() > 0 ? "copying" : "done");
      t.round_base = t.result->bytes_sent();
      t.rejected_base = t.result->chunks_rejected();
      below.insert(p->needed().begin(), p->needed().end());
      next_target = JoinHostPort(t.endpoint.ip, static_cast<uint16_t>(p->port()));
      next_token = prepare.token();
      prepared.insert(prepared.begin(), &t);
    }
    // A dropped target breaks the planned upstream addresses of the one after it; that one
    // refuses the connection and is retried in the next round with a fresh plan.
    if (CancelRequested()) return cancelled();
    if (prepared.empty()) break;
    run.set_state("copying");
    Publish(run);

    v1::StageSendRequest send;
    send.set_transfer_id(transfer_id);
    *send.mutable_manifest() = manifest;
    send.set_target(next_target);
    send.set_token(next_token);
    send.set_source_ip(from->ip);
    send.set_streams(streams);
    for (uint32_t g : below) send.add_chunks(g);
    absl::StatusOr<v1::StageSendResponse> sent = SendWhilePolling(
        [&] { return agents_->Send(from->agent_address, from->node_id, send, kCopyDeadline); },
        [&] {
          for (Target* t : prepared) {
            v1::StageFinishRequest poll;
            poll.set_transfer_id(transfer_id);
            absl::StatusOr<v1::StageFinishResponse> now = agents_->Finish(
                t->endpoint.agent_address, t->endpoint.node_id, poll, kPollDeadline);
            if (now.ok()) t->result->set_bytes_done(t->round_base + now->bytes_written());
          }
        },
        run, start);
    if (CancelRequested()) return cancelled();
    if (!sent.ok()) run.set_error(std::string(sent.status().message()));
    const std::vector<FinishAnswer<v1::StageFinishResponse>> ends =
        FinishAll<v1::StageFinishResponse>(prepared.size(), [&](size_t i) {
          v1::StageFinishRequest finish;
          finish.set_transfer_id(transfer_id);
          finish.set_wait(true);
          return agents_->Finish(prepared[i]->endpoint.agent_address, prepared[i]->endpoint.node_id,
                                 finish, kCopyDeadline);
        });
    for (size_t i = 0; i < prepared.size(); ++i) {
      Target* t = prepared[i];
      const absl::StatusOr<v1::StageFinishResponse>& end = ends[i].answer;
      if (!end.ok()) {
        fail(*t, std::string(end.status().message()));
        continue;
      }
      t->result->set_bytes_sent(t->round_base + end->bytes_written());
      t->result->set_bytes_done(t->result->bytes_sent());
      t->result->set_chunks_rejected(t->rejected_base + end->chunks_rejected());
      t->missing = end->chunks_missing();
      t->result->set_seconds(absl::ToDoubleSeconds(ends[i].at - start));
      if (!end->error().empty()) {
        fail(*t, end->error());
      } else if (t->missing == 0) {
        t->result->set_state("done");
        t->result->set_tree_sha256(manifest.tree_sha256());
      }
    }
    Publish(run);
  }
  if (CancelRequested()) return cancelled();
  std::vector<std::string> failed;
  for (Target& t : targets) {
    if (t.failed) {
      failed.push_back(t.result->node());
    } else if (t.missing > 0) {
      fail(t, absl::StrCat(t.missing, " chunks still missing after ", kMaxRounds,
                           " rounds (each failed its SHA-256 check or never arrived); is the "
                           "source changing, or a link corrupting data?"));
      failed.push_back(t.result->node());
    }
  }
  run.set_seconds(absl::ToDoubleSeconds(clock_->Now() - start));
  if (failed.empty()) {
    run.set_state("done");
    run.clear_error();
  } else {
    run.set_state("failed");
    run.set_error(absl::StrCat("not staged on ", absl::StrJoin(failed, ", "),
                               run.error().empty() ? "" : absl::StrCat(" (", run.error(), ")")));
  }
  Publish(run);
  v1::StageModelResponse response;
  *response.mutable_run() = std::move(run);
  return response;
}

}  // namespace fleet::controller
