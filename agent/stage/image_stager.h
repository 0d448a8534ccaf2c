// ImageStager: the agent's side of `fleet stage image`, through the docker CLI (so DOCKER_HOST
// in the agent's environment picks the engine):
//
//   source: docker save REF --1 stream--> node 1: docker load, and on --> node 2: docker load ...
//
// Inspect answers the image's ID here (`docker image inspect`). Receive opens a data port that
// admits only the planned upstream address presenting the one-time token (common/data_socket.h),
// connects to the next hop when told to, and starts `docker load -i FIFO` on a named pipe: one
// thread copies every byte it receives into the pipe and on to the next hop, so the chain costs
// about one copy. Send runs `docker save REF` and streams its output to the first hop. Finish
// answers progress, or waits for the load's end and answers the image ID the engine now has.
//
// Nothing on the data connection needs to be trusted: docker load checks every layer against the
// config's diff_ids, and the image ID is the SHA-256 of that config, so the controller's
// comparison of the loaded ID with the source's fixes the content. A pipe, not a file: the image
// is never written to disk twice, and a load overlaps the transfer.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/process/process_runner.h"
#include "fleet/v1/stage.pb.h"

namespace fleet::agent {

struct ImageStagerOptions {
  std::string node_name;          // in error messages
  std::string docker = "docker";  // the CLI, looked up in PATH
  std::string fifo_dir;           // a private directory per load is made here (STATE_DIR)
  // Runs the docker CLI; DefaultProcessRunner() when null. Must outlive the stager.
  ProcessRunner* runner = nullptr;
};

// Example (what the controller's calls amount to, node 1 receiving from the source):
//   node1.Receive({transfer_id, ref, token, bind_ip, peer_ip = source ip}) -> port
//   source.Send({transfer_id, ref, target = node1 ip:port, token, source_ip})
//   node1.Finish({transfer_id, wait = true}) -> image_id
class ImageStager {
 public:
  explicit ImageStager(ImageStagerOptions options);
  ~ImageStager();

  // present=false when the engine answers that it has no such image. FailedPrecondition naming
  // the node and the fix when the docker CLI is missing or the engine does not answer.
  absl::StatusOr<v1::StageImageInspectResponse> Inspect(
      const v1::StageImageInspectRequest& request);
  // Unavailable when the next hop cannot be reached; FailedPrecondition when docker load cannot
  // start. The port stays open for the upstream for 60 s.
  absl::StatusOr<v1::StageImageReceiveResponse> Receive(
      const v1::StageImageReceiveRequest& request);
  // Blocking until `docker save` ended. FailedPrecondition with docker's stderr when the save
  // fails (REF not here), Unavailable when the first hop is lost.
  absl::StatusOr<v1::StageSendResponse> Send(const v1::StageImageSendRequest& request);
  // NotFound for an unknown transfer. With wait, at most 30 minutes for the load to end; a
  // finished transfer is forgotten once its end was answered. With abort (`fleet stage cancel`):
  // the data port and connections close, `docker load` is killed, and the transfer is forgotten.
  absl::StatusOr<v1::StageImageFinishResponse> Finish(const v1::StageFinishRequest& request);
  // Ends every receive (the agent is stopping): their loads are killed, waiting calls return.
  void Shutdown();

  class Transfer;

 private:
  const ImageStagerOptions options_;
  ProcessRunner* const runner_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Transfer>> transfers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::agent
