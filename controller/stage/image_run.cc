// StageRunner::RunImage: `fleet stage image`. The plan (who has the image, who is skipped, the
// chain of the others), the transfer, and the ID comparison that makes a loaded image trusted.
#include <algorithm>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/host_port.h"
#include "common/pki.h"
#include "common/status_macros.h"
#include "controller/fabric/fabric_runner.h"
#include "controller/stage/stage_runner.h"

namespace fleet::controller {
namespace {

constexpr absl::Duration kInspectDeadline = absl::Seconds(60);
constexpr absl::Duration kReceiveDeadline = absl::Seconds(60);
constexpr absl::Duration kCopyDeadline = absl::Hours(6);
constexpr absl::Duration kPollDeadline = absl::Seconds(5);

struct Target {
  FabricEndpoint endpoint;
  v1::StageNodeResult* result = nullptr;
  bool failed = false;
};

}  // namespace

absl::StatusOr<v1::StageImageResponse> StageRunner::RunImage(const v1::StageImageRequest& request,
                                                             const std::vector<v1::Node>& nodes) {
  const std::string& ref = request.ref();
  if (ref.empty() || ref[0] == '-' || ref.find_first_of(" \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "name the image as docker does (repo/name:tag or an image ID); got `", ref, "`"));
  }
  if (request.to().empty()) {
    return absl::InvalidArgumentError("name the target nodes: --to node-2,node-3");
  }
  const ReadyEndpoints ready = ReadyEndpointsOf(nodes);
  ASSIGN_OR_RETURN(const std::set<std::string> seen,
                   CheckFromAndTo(ready, request.to(), request.from()));

  absl::MutexLock run_lock(&run_mu_);
  InFlight in_flight(this, /*image=*/true);
  const absl::Time start = clock_->Now();
  v1::StageRun run;
  run.set_id(absl::StrCat("stage-", absl::ToUnixMillis(start)));
  run.set_kind("image");
  run.set_source(ref);
  run.set_state("planning");
  auto give_up = [&](absl::Status status) {
    run.set_state("failed");
    run.set_error(std::string(status.message()));
    run.set_seconds(absl::ToDoubleSeconds(clock_->Now() - start));
    Publish(run);
    return status;
  };

  // The source: the named node, else the first Ready non-target whose engine has the image.
  v1::StageImageInspectRequest inspect;
  inspect.set_ref(ref);
  std::optional<FabricEndpoint> from;
  v1::StageImageInspectResponse source;
  std::vector<std::string> tried;
  for (const std::string& name : ready.names) {
    if (request.from().empty() ? seen.contains(name) : name != request.from()) continue;
    const FabricEndpoint& e = ready.by_name.at(name);
    absl::StatusOr<v1::StageImageInspectResponse> found =
        agents_->InspectImage(e.agent_address, e.node_id, inspect, kInspectDeadline);
    if (!request.from().empty() && !found.ok()) return give_up(found.status());
    if (found.ok() && found->present()) {
      from = e;
      source = *found;
      break;
    }
    tried.push_back(found.ok() ? absl::StrCat(name, ": not there")
                               : absl::StrCat(name, ": ", found.status().message()));
  }
  if (!from.has_value()) {
    return give_up(absl::FailedPreconditionError(
        request.from().empty()
            ? absl::StrCat("image ", ref, " not found on any Ready node that is not a target (",
                           absl::StrJoin(tried, "; "),
                           "); pull or build it on one, or name --from NODE")
            : absl::StrCat("image ", ref, " not found on node ", request.from(),
                           "; pull or build it there, or name another --from")));
  }
  run.set_from(from->name);

  // Each target's ID: the source's means nothing to send.
  std::vector<Target> targets;
  for (const std::string& name : request.to()) {
    v1::StageNodeResult* r = run.add_nodes();
    r->set_node(name);
    r->set_state("pending");
    r->set_bytes(source.size());
  }
  for (int i = 0; i < run.nodes_size(); ++i) {
    targets.push_back(
        {.endpoint = ready.by_name.at(run.nodes(i).node()), .result = run.mutable_nodes(i)});
  }
  auto fail = [&](Target& t, std::string error) {
    t.failed = true;
    t.result->set_state("failed");
    t.result->set_error(std::move(error));
    t.result->set_seconds(absl::ToDoubleSeconds(clock_->Now() - start));
  };
  std::vector<Target*> chain;  // the targets that lack the image, in --to order
  for (Target& t : targets) {
    absl::StatusOr<v1::StageImageInspectResponse> has = agents_->InspectImage(
        t.endpoint.agent_address, t.endpoint.node_id, inspect, kInspectDeadline);
    if (!has.ok()) {
      fail(t, std::string(has.status().message()));
    } else if (has->present() && has->image_id() == source.image_id()) {
      t.result->set_state("done");
      t.result->set_skipped(true);
      t.result->set_image_id(has->image_id());
      t.result->set_seconds(absl::ToDoubleSeconds(clock_->Now() - start));
    } else {
      t.result->set_bytes_needed(source.size());
      chain.push_back(&t);
    }
  }
  Publish(run);
  auto cancelled = [&] {
    EndCancelled(run, start);
    v1::StageImageResponse response;
    *response.mutable_run() = run;
    return response;
  };

  // The chain source -> chain[0] -> chain[1] -> ..., the last hop prepared first so each
  // hop can connect to the next. A hop that cannot be prepared leaves the chain, and the chain
  // is planned again without it (the ports already opened time out unused).
  const std::string transfer_base = absl::StrCat(run.id(), "-image");
  for (int attempt = 1; !chain.empty(); ++attempt) {
    if (CancelRequested()) return cancelled();
    const std::string transfer_id = absl::StrCat(transfer_base, "-", attempt);
    std::string next_target;
    std::string next_token;
    Target* dropped = nullptr;
    for (int k = static_cast<int>(chain.size()) - 1; k >= 0 && !CancelRequested(); --k) {
      Target& t = *chain[k];
      v1::StageImageReceiveRequest receive;
      receive.set_transfer_id(transfer_id);
      receive.set_ref(ref);
      receive.set_token(pki::RandomBytes(32));
      receive.set_bind_ip(t.endpoint.ip);
      receive.set_peer_ip(k > 0 ? chain[k - 1]->endpoint.ip : from->ip);
      if (!next_target.empty()) {
        v1::StageForward* fwd = receive.mutable_forward();
        fwd->set_target(next_target);
        fwd->set_token(next_token);
        fwd->set_source_ip(t.endpoint.ip);
      }
      absl::StatusOr<v1::StageImageReceiveResponse> port = agents_->ReceiveImage(
          t.endpoint.agent_address, t.endpoint.node_id, receive, kReceiveDeadline);
      if (!port.ok()) {
        fail(t, std::string(port.status().message()));
        dropped = &t;
        break;
      }
      TrackOpened(t.endpoint.agent_address, t.endpoint.node_id, transfer_id);
      t.result->set_state("copying");
      next_target = JoinHostPort(t.endpoint.ip, static_cast<uint16_t>(port->port()));
      next_token = receive.token();
    }
    if (CancelRequested()) return cancelled();
    if (dropped != nullptr) {
      std::erase(chain, dropped);
      continue;
    }
    run.set_rounds(1);
    run.set_state("copying");
    Publish(run);

    v1::StageImageSendRequest send;
    send.set_transfer_id(transfer_id);
    send.set_ref(ref);
    send.set_target(next_target);
    send.set_token(next_token);
    send.set_source_ip(from->ip);
    absl::StatusOr<v1::StageSendResponse> sent = SendWhilePolling(
        [&] { return agents_->SendImage(from->agent_address, from->node_id, send, kCopyDeadline); },
        [&] {
          for (Target* t : chain) {
            v1::StageFinishRequest poll;
            poll.set_transfer_id(transfer_id);
            absl::StatusOr<v1::StageImageFinishResponse> now = agents_->FinishImage(
                t->endpoint.agent_address, t->endpoint.node_id, poll, kPollDeadline);
            if (now.ok()) t->result->set_bytes_done(now->bytes_received());
          }
        },
        run, start);
    if (CancelRequested()) return cancelled();
    if (!sent.ok()) run.set_error(std::string(sent.status().message()));
    const std::vector<FinishAnswer<v1::StageImageFinishResponse>> ends =
        FinishAll<v1::StageImageFinishResponse>(chain.size(), [&](size_t i) {
          v1::StageFinishRequest finish;
          finish.set_transfer_id(transfer_id);
          finish.set_wait(true);
          return agents_->FinishImage(chain[i]->endpoint.agent_address, chain[i]->endpoint.node_id,
                                      finish, kCopyDeadline);
        });
    for (size_t i = 0; i < chain.size(); ++i) {
      Target* t = chain[i];
      const absl::StatusOr<v1::StageImageFinishResponse>& end = ends[i].answer;
      if (!end.ok()) {
        fail(*t, std::string(end.status().message()));
        continue;
      }
      t->result->set_bytes_sent(end->bytes_received());
      t->result->set_bytes_done(end->bytes_received());
      t->result->set_image_id(end->image_id());
      t->result->set_seconds(absl::ToDoubleSeconds(ends[i].at - start));
      if (!end->error().empty()) {
        fail(*t, end->error());
      } else if (!end->done()) {
        fail(*t, absl::StrCat("node ", t->result->node(), ": docker load had not ended after ",
                              t->result->seconds(), " s; see docker's log there"));
      } else if (end->image_id() != source.image_id()) {
        // The ID is the SHA-256 of the image's config, which names every layer's digest: any
        // other ID is other content.
        fail(*t, absl::StrCat("node ", t->result->node(), " holds ", ref, " as ", end->image_id(),
                              " after the load, but the source ", from->name, " has ",
                              source.image_id(), "; remove it there (docker rmi ", ref,
                              ") and stage again"));
      } else {
        t->result->set_state("done");
      }
    }
    break;
  }
  if (CancelRequested()) return cancelled();

  std::vector<std::string> failed;
  for (Target& t : targets) {
    if (t.failed) failed.push_back(t.result->node());
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
  v1::StageImageResponse response;
  *response.mutable_run() = std::move(run);
  return response;
}

}  // namespace fleet::controller
