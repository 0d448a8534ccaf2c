// How the echo engine's ranks find each other, like torch's TCP store on the rank-0 master
// port: rank 0 listens on FLEET_MASTER_ADDR:FLEET_MASTER_PORT, every worker connects and sends
// one hello line; rank 0 answers each and, once all world_size - 1 workers are in, tells them
// to start. The connections then stay open: either side ending means the group is broken.
//
// Wire protocol (one line each, '\n'-terminated, at most kMaxLineBytes):
//   worker -> head  {"group":"demo","rank":1,"generation":7,"hostname":"spark-2",
//                    "env":{"FLEET_RANK":"1","NCCL_SOCKET_IFNAME":"enp1s0f1np1",...}}
//   head -> worker  "welcome"  or  "refused: <why>" (then the head closes the connection)
//   head -> worker  "ready" once every worker has been welcomed
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tests/support/echo_engine/net.h"

namespace fleet::echo {

inline constexpr size_t kMaxLineBytes = 16 * 1024;

// One rank's introduction: who it is and the environment it was started with, so rank 0 (and
// GET /ranks) can show that every rank got its own variables.
struct Hello {
  std::string group;
  int rank = 0;
  uint64_t generation = 0;
  std::string hostname;
  std::map<std::string, std::string> env;
};

nlohmann::json HelloToJson(const Hello& hello);
absl::StatusOr<Hello> ParseHello(absl::string_view line);

// The variables a hello carries: every FLEET_* one, and those that steer a real engine's
// fabric (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME, NCCL_IB_HCA, VLLM_HOST_IP,
// MASTER_ADDR, MASTER_PORT). `environ` is a null-terminated "NAME=VALUE" array.
std::map<std::string, std::string> RendezvousEnv(const char* const* environ);

// "FLEET_RANK=1 NCCL_SOCKET_IFNAME=eth0 ...", sorted by name.
std::string FormatEnv(const std::map<std::string, std::string>& env);

// Rank 0's side. Every method blocks; a rank-0 process runs one Head on one thread.
class Head {
 public:
  // `listener` listens on the master port; `self` is rank 0's own hello.
  Head(UniqueFd listener, Hello self, int world_size);

  // Accepts connections until a welcome went to every rank 1..world_size-1. A hello of another
  // group or generation, of a rank out of range or of a rank already in is refused (logged,
  // answered "refused: ...", closed); a connection that closes without a hello (a TCP
  // readiness check) is dropped quietly. DeadlineExceeded at `deadline` naming the ranks that
  // never arrived. A welcomed worker whose connection ends before the group is complete is
  // forgotten, so it may join again. Returns the hellos of every rank, rank 0 first.
  absl::StatusOr<std::vector<Hello>> AwaitWorkers(absl::Time deadline);

  // After AwaitWorkers: sends "ready" to every worker, then refuses newcomers until a worker's
  // connection ends. Returns the Unavailable naming the rank whose connection ended.
  absl::Status WatchWorkers();

 private:
  struct Pending {
    UniqueFd fd;
    std::string buffer;
    absl::Time accepted_at;
  };

  void AcceptOne(std::vector<Pending>& pending);
  // Reads what `conn` sent; false when it is finished with (refused, closed or welcomed).
  bool ReadHello(Pending& conn);
  void Refuse(int fd, absl::string_view why);

  UniqueFd listener_;
  const Hello self_;
  const int world_size_;
  std::map<int, Hello> hellos_;      // rank -> hello, workers only
  std::map<int, UniqueFd> workers_;  // rank -> its connection
};

// A worker's side: connects to the head (retrying refused or failed connections until
// `deadline`), sends `hello` and waits for "ready". Returns the connection, which the worker
// keeps open. Aborted when the head refused the hello (another generation: retrying cannot
// help), DeadlineExceeded naming the master address when the deadline passed.
absl::StatusOr<UniqueFd> JoinHead(const std::string& master_addr, int master_port,
                                  const Hello& hello, absl::Time deadline);

// Blocks until the head closes `head_connection` (or it fails).
void AwaitClose(int head_connection);

}  // namespace fleet::echo
