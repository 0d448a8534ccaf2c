// FakeStageAgentClient: agents as tables. `trees` says which agent (by address) holds which
// manifest; `lacking` which chunk indices each target lacks; `rejects` how many of the chunks a
// target receives in its next round fail their hash. For images, `images` says which agent holds
// which image ID; a load gives the target the ID the source sent unless `loaded_ids` says
// otherwise. Every call is recorded in order, so tests check the chain the runner planned. With
// `hold_sends`, a send (model or image) blocks until a target is told to abort, then fails as a
// send whose first hop closed does: a copy in flight for `fleet stage cancel` to stop. With
// `hold_scans`, the source's scan blocks until the run is cancelled (a first scan of a large tree).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "controller/stage/stage_agent_client.h"

namespace fleet::controller {

class FakeStageAgentClient final : public StageAgentClient {
 public:
  absl::StatusOr<v1::StageScanResponse> Scan(const std::string& address, const std::string&,
                                             const v1::StageScanRequest& request, absl::Duration,
                                             const absl::Notification& cancel) override {
    {
      absl::MutexLock lock(&mu_);
      calls.push_back(absl::StrCat("scan ", address));
      if (!hold_scans) return Scanned(address, request);
      ++held_;
    }
    if (!cancel.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      return absl::DeadlineExceededError("the held scan was never cancelled");
    }
    return absl::CancelledError(absl::StrCat("agent at ", address, ": Cancelled"));
  }
  absl::StatusOr<v1::StagePrepareResponse> Prepare(const std::string& address, const std::string&,
                                                   const v1::StagePrepareRequest& request,
                                                   absl::Duration) override {
    absl::MutexLock lock(&mu_);
    calls.push_back(absl::StrCat("prepare ", address));
    prepares[address].push_back(request);
    if (auto it = prepare_errors.find(address); it != prepare_errors.end()) return it->second;
    v1::StagePrepareResponse response;
    response.set_port(40000 + static_cast<uint32_t>(calls.size()));
    response.set_real_dest(absl::StrCat("/prefix", request.dest()));
    for (uint32_t g : lacking[address]) {
      response.add_needed(g);
      response.set_bytes_needed(response.bytes_needed() + kChunkBytes);
    }
    return response;
  }
  absl::StatusOr<v1::StageSendResponse> Send(const std::string& address, const std::string&,
                                             const v1::StageSendRequest& request,
                                             absl::Duration) override {
    absl::MutexLock lock(&mu_);
    calls.push_back(absl::StrCat("send ", address));
    sends.push_back(request);
    if (hold_sends) return HeldSend();
    v1::StageSendResponse response;
    response.set_bytes_sent(request.chunks_size() * kChunkBytes);
    return response;
  }
  // With wait: the target's lacking chunks that the last send carried arrive, less `rejects`.
  absl::StatusOr<v1::StageFinishResponse> Finish(const std::string& address, const std::string&,
                                                 const v1::StageFinishRequest& request,
                                                 absl::Duration) override {
    absl::MutexLock lock(&mu_);
    v1::StageFinishResponse response;
    if (request.abort()) {
      calls.push_back(absl::StrCat("abort ", address, " ", request.transfer_id()));
      ++aborts_;
      return response;
    }
    if (!request.wait()) return response;
    calls.push_back(absl::StrCat("finish ", address));
    RETURN_IF_ERROR(Together());
    std::set<uint32_t> sent(sends.back().chunks().begin(), sends.back().chunks().end());
    std::set<uint32_t>& lack = lacking[address];
    int& rejected = rejects[address];
    for (auto it = lack.begin(); it != lack.end();) {
      if (!sent.contains(*it)) {
        ++it;
      } else if (rejected > 0) {
        --rejected;
        response.set_chunks_rejected(response.chunks_rejected() + 1);
        ++it;
      } else {
        response.set_bytes_written(response.bytes_written() + kChunkBytes);
        it = lack.erase(it);
      }
    }
    response.set_chunks_missing(static_cast<uint32_t>(lack.size()));
    response.set_done(true);
    return response;
  }

  absl::StatusOr<v1::StageImageInspectResponse> InspectImage(const std::string& address,
                                                             const std::string&,
                                                             const v1::StageImageInspectRequest&,
                                                             absl::Duration) override {
    absl::MutexLock lock(&mu_);
    calls.push_back(absl::StrCat("inspect ", address));
    if (auto it = inspect_errors.find(address); it != inspect_errors.end()) return it->second;
    v1::StageImageInspectResponse response;
    if (auto it = images.find(address); it != images.end()) {
      response.set_present(true);
      response.set_image_id(it->second);
      response.set_size(kImageBytes);
    }
    return response;
  }
  absl::StatusOr<v1::StageImageReceiveResponse> ReceiveImage(
      const std::string& address, const std::string&, const v1::StageImageReceiveRequest& request,
      absl::Duration) override {
    absl::MutexLock lock(&mu_);
    calls.push_back(absl::StrCat("receive ", address));
    receives[address].push_back(request);
    if (auto it = receive_errors.find(address); it != receive_errors.end()) return it->second;
    v1::StageImageReceiveResponse response;
    response.set_port(41000 + static_cast<uint32_t>(calls.size()));
    return response;
  }
  absl::StatusOr<v1::StageSendResponse> SendImage(const std::string& address, const std::string&,
                                                  const v1::StageImageSendRequest& request,
                                                  absl::Duration) override {
    absl::MutexLock lock(&mu_);
    calls.push_back(absl::StrCat("send-image ", address));
    image_sends.push_back(request);
    if (hold_sends) return HeldSend();
    sent_id_ = images[address];
    v1::StageSendResponse response;
    response.set_bytes_sent(kImageBytes);
    return response;
  }
  // With wait: the image the last send carried, loaded (or `load_errors`).
  absl::StatusOr<v1::StageImageFinishResponse> FinishImage(const std::string& address,
                                                           const std::string&,
                                                           const v1::StageFinishRequest& request,
                                                           absl::Duration) override {
    absl::MutexLock lock(&mu_);
    v1::StageImageFinishResponse response;
    if (request.abort()) {
      calls.push_back(absl::StrCat("abort-image ", address, " ", request.transfer_id()));
      ++aborts_;
      return response;
    }
    if (!request.wait()) return response;
    calls.push_back(absl::StrCat("finish-image ", address));
    RETURN_IF_ERROR(Together());
    response.set_done(true);
    response.set_bytes_received(kImageBytes);
    if (auto it = load_errors.find(address); it != load_errors.end()) {
      response.set_error(it->second);
      return response;
    }
    auto it = loaded_ids.find(address);
    images[address] = it != loaded_ids.end() ? it->second : sent_id_;
    response.set_image_id(images[address]);
    return response;
  }

  static constexpr uint64_t kChunkBytes = 100;
  static constexpr uint64_t kImageBytes = 5000;
  std::map<std::string, v1::StageManifest> trees;      // agent address -> tree it holds
  std::map<std::string, std::set<uint32_t>> lacking;   // agent address -> chunk indices
  std::map<std::string, int> rejects;                  // agent address -> bad chunks to come
  std::map<std::string, absl::Status> prepare_errors;  // agent address -> Prepare's answer
  std::vector<std::string> calls;                      // "prepare 10.0.0.3:7101", ...
  std::map<std::string, std::vector<v1::StagePrepareRequest>> prepares;
  std::vector<v1::StageSendRequest> sends;
  std::map<std::string, std::string> images;           // agent address -> image ID it holds
  std::map<std::string, absl::Status> inspect_errors;  // agent address -> InspectImage's answer
  std::map<std::string, absl::Status> receive_errors;  // agent address -> ReceiveImage's answer
  std::map<std::string, std::string> load_errors;      // agent address -> its load's error
  std::map<std::string, std::string> loaded_ids;       // agent address -> ID a load yields
  std::map<std::string, std::vector<v1::StageImageReceiveRequest>> receives;
  std::vector<v1::StageImageSendRequest> image_sends;
  bool hold_sends = false;  // set before the run starts
  bool hold_scans = false;  // a scan blocks until the run is cancelled, then fails Cancelled
  // When set, each final Finish/FinishImage (wait) returns only once this many have been asked,
  // DeadlineExceeded after 5 s: asked one after another, they never meet.
  int finish_together = 0;

  // Waits (up to 10 s) until a send (or with `hold_scans`, a scan) is held; false when none came.
  bool WaitForHeldSend() {
    absl::MutexLock lock(&mu_);
    auto held = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return held_ > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&held), absl::Seconds(10));
  }

 private:
  absl::StatusOr<v1::StageScanResponse> Scanned(const std::string& address,
                                                const v1::StageScanRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = trees.find(address);
    if (it == trees.end() || it->second.root() != request.path()) {
      return absl::NotFoundError(absl::StrCat(request.path(), " is not a directory on this node"));
    }
    v1::StageScanResponse response;
    *response.mutable_manifest() = it->second;
    return response;
  }

  absl::StatusOr<v1::StageSendResponse> HeldSend() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++held_;
    auto aborted = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return aborts_ > 0; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&aborted), absl::Seconds(10))) {
      return absl::DeadlineExceededError("the held send was never released by an abort");
    }
    return absl::UnavailableError("sending to the first hop: Connection reset by peer");
  }

  absl::Status Together() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++finishing_;
    auto met = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return finishing_ >= finish_together; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&met), absl::Seconds(5))) {
      return absl::DeadlineExceededError(absl::StrCat(finishing_, " of ", finish_together,
                                                      " finishes asked at once; the rest waited"));
    }
    return absl::OkStatus();
  }

  int held_ ABSL_GUARDED_BY(mu_) = 0;
  int finishing_ ABSL_GUARDED_BY(mu_) = 0;
  int aborts_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Mutex mu_;
  std::string sent_id_;  // the image ID the last SendImage carried
};

}  // namespace fleet::controller
