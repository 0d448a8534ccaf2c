// An AgentClient for tests: answers from a table of addresses, synchronously. Probes can be
// held (HoldProbes) to stand for an agent hashing a model for minutes.
#pragma once

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "controller/groups/agent_client.h"

namespace fleet::controller {

class FakeAgentClient final : public AgentClient {
 public:
  // The agent at `address` answers as `node_id`.
  void AddAgent(const std::string& address, const std::string& node_id) {
    agents_[address] = node_id;
  }
  void Describe(const std::string& address, const std::string& node_id,
                DescribeCallback done) override {
    ++calls_;
    auto it = agents_.find(address);
    if (it == agents_.end()) {
      std::move(done)(absl::UnavailableError("connection refused"));
      return;
    }
    if (it->second != node_id) {
      std::move(done)(absl::FailedPreconditionError("this agent is node " + it->second));
      return;
    }
    v1::DescribeResponse response;
    response.mutable_identity()->set_node_id(node_id);
    std::move(done)(std::move(response));
  }
  int calls() const { return calls_; }

  // Shard orders: answered at once, and recorded.
  absl::StatusOr<v1::StartShardResponse> StartShard(const std::string& address, const std::string&,
                                                    const v1::StartShardRequest& request,
                                                    absl::Duration) override {
    absl::MutexLock lock(&mu_);
    starts_.push_back({address, request});
    if (auto it = start_errors_.find(address); it != start_errors_.end()) return it->second;
    v1::StartShardResponse response;
    v1::ShardStatus& status = *response.mutable_status();
    status.set_group(request.spec().group());
    status.set_generation(request.spec().generation());
    status.set_rank(request.spec().rank());
    status.set_state(v1::SHARD_STATE_STARTING);
    return response;
  }
  absl::StatusOr<v1::StopShardsResponse> StopShards(const std::string& address, const std::string&,
                                                    const v1::StopShardsRequest& request,
                                                    absl::Duration) override {
    absl::MutexLock lock(&mu_);
    stops_.push_back({address, request});
    if (auto it = stop_errors_.find(address); it != stop_errors_.end()) return it->second;
    return v1::StopShardsResponse();
  }
  absl::StatusOr<v1::ReadShardLogResponse> ReadShardLog(const std::string& address,
                                                        const std::string&,
                                                        const v1::ReadShardLogRequest& request,
                                                        absl::Duration) override {
    v1::ReadShardLogResponse response;
    absl::MutexLock lock(&mu_);
    auto it = logs_.find(absl::StrCat(address, "/", request.group(), "/", request.rank()));
    if (it != logs_.end()) {
      // Offsets count every byte written, as the agent's do; a tail read gives it all.
      const std::string& text = it->second;
      const size_t from =
          request.has_offset() ? std::min<size_t>(request.offset(), text.size()) : 0;
      response.set_data(text.substr(from));
      response.set_start_offset(from);
      response.set_next_offset(text.size());
      return response;
    }
    response.set_data(
        absl::StrCat("log of ", request.group(), " rank ", request.rank(), " at ", address, "\n"));
    response.set_next_offset(response.data().size());
    return response;
  }
  // The rank's output at `address` grows by `text` (ReadShardLog answers from it).
  void AppendLog(const std::string& address, const std::string& group, uint32_t rank,
                 const std::string& text) {
    absl::MutexLock lock(&mu_);
    logs_[absl::StrCat(address, "/", group, "/", rank)] += text;
  }

  // Probes answer with what SetProbe gave for the address (an empty probe otherwise).
  // While probes are held, a probe waits until ReleaseProbes or its deadline, whichever comes
  // first (then it fails with DeadlineExceeded, as the gRPC client would).
  absl::StatusOr<v1::NodeProbe> Probe(const std::string& address, const std::string&,
                                      const v1::ProbeRequest& request,
                                      absl::Duration deadline) override {
    absl::MutexLock lock(&mu_);
    probes_asked_.push_back({address, request});
    auto released = [this, &address]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !hold_all_probes_ && !held_probes_.count(address);
    };
    if (!released()) {
      ++probes_waiting_;
      bool in_time = mu_.AwaitWithTimeout(absl::Condition(&released), deadline);
      --probes_waiting_;
      if (!in_time) return absl::DeadlineExceededError(absl::StrCat("probe of ", address));
    }
    auto it = probes_.find(address);
    return it == probes_.end() ? v1::NodeProbe() : it->second;
  }
  // Holds the probes of the agents at `addresses`, or of every agent when it is empty.
  void HoldProbes(const std::vector<std::string>& addresses = {}) {
    absl::MutexLock lock(&mu_);
    if (addresses.empty()) hold_all_probes_ = true;
    held_probes_.insert(addresses.begin(), addresses.end());
  }
  void ReleaseProbes() {
    absl::MutexLock lock(&mu_);
    hold_all_probes_ = false;
    held_probes_.clear();
  }
  // Waits up to `timeout` until at least `n` probes are held; returns whether they are.
  bool AwaitHeldProbes(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return probes_waiting_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  int probes_waiting() const {
    absl::MutexLock lock(&mu_);
    return probes_waiting_;
  }
  void SetProbe(const std::string& address, v1::NodeProbe probe) {
    absl::MutexLock lock(&mu_);
    probes_[address] = std::move(probe);
  }

  // Health looks answer with what SetHealth gave for the address, or its error; an empty
  // sample otherwise.
  absl::StatusOr<v1::NodeHealthSample> CollectHealth(const std::string& address, const std::string&,
                                                     const v1::CollectHealthRequest& request,
                                                     absl::Duration) override {
    absl::MutexLock lock(&mu_);
    health_asked_.push_back({address, request});
    auto it = health_.find(address);
    if (it == health_.end()) return v1::NodeHealthSample();
    return it->second;
  }
  void SetHealth(const std::string& address, absl::StatusOr<v1::NodeHealthSample> sample) {
    absl::MutexLock lock(&mu_);
    health_.insert_or_assign(address, std::move(sample));
  }

  template <typename Request>
  struct Call {
    std::string address;
    Request request;
  };
  std::vector<Call<v1::StartShardRequest>> starts() const {
    absl::MutexLock lock(&mu_);
    return starts_;
  }
  std::vector<Call<v1::StopShardsRequest>> stops() const {
    absl::MutexLock lock(&mu_);
    return stops_;
  }
  // A router answers like HAProxy would: once a StartShard of its group reached `address` (and no
  // StopShards since), set_servers updates its slots and show lists them; before that,
  // FailedPrecondition as the agent answers when no router runs there.
  absl::StatusOr<v1::RouterCommandResponse> RouterCommand(const std::string& address,
                                                          const std::string&,
                                                          const v1::RouterCommandRequest& request,
                                                          absl::Duration) override {
    absl::MutexLock lock(&mu_);
    router_commands_.push_back({address, request});
    const std::string key = absl::StrCat(address, "/", request.group());
    bool runs = false;
    for (const auto& start : starts_) {
      if (start.address == address && start.request.spec().group() == request.group()) runs = true;
    }
    for (const auto& stop : stops_) {
      if (stop.address == address && stop.request.group() == request.group()) runs = false;
    }
    if (!runs) return absl::FailedPreconditionError("no router " + request.group() + " runs here");
    std::map<uint32_t, v1::RouterServer>& slots = routers_[key];
    v1::RouterCommandResponse response;
    for (const v1::RouterServer& set : request.set_servers().servers()) {
      v1::RouterServer& slot = slots[set.slot()];
      slot.set_slot(set.slot());
      if (!set.host().empty()) {
        slot.set_host(set.host());
        slot.set_port(set.port());
      }
      if (set.state() != v1::ROUTER_SERVER_STATE_UNSPECIFIED) slot.set_state(set.state());
    }
    if (request.has_show()) {
      for (auto& [number, slot] : slots) {
        *response.add_servers() = slot;
        response.mutable_servers()->rbegin()->set_current_sessions(sessions_[key]);
      }
    }
    return response;
  }
  std::vector<Call<v1::RouterCommandRequest>> router_commands() const {
    absl::MutexLock lock(&mu_);
    return router_commands_;
  }
  // `show` reports this many requests in flight on every slot of the router at `address`.
  void SetRouterSessions(const std::string& address, const std::string& group, uint32_t n) {
    absl::MutexLock lock(&mu_);
    sessions_[absl::StrCat(address, "/", group)] = n;
  }

  std::vector<Call<v1::CollectHealthRequest>> health_asked() const {
    absl::MutexLock lock(&mu_);
    return health_asked_;
  }

  // Orders to the agent at `address` fail with `error` from now on.
  void FailStarts(const std::string& address, absl::Status error) {
    absl::MutexLock lock(&mu_);
    start_errors_[address] = std::move(error);
  }
  void FailStops(const std::string& address, absl::Status error) {
    absl::MutexLock lock(&mu_);
    stop_errors_[address] = std::move(error);
  }

 private:
  std::map<std::string, std::string> agents_;
  int calls_ = 0;
  mutable absl::Mutex mu_;
  std::vector<Call<v1::StartShardRequest>> starts_ ABSL_GUARDED_BY(mu_);
  std::vector<Call<v1::StopShardsRequest>> stops_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> start_errors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> stop_errors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> logs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::NodeProbe> probes_ ABSL_GUARDED_BY(mu_);
  std::vector<Call<v1::RouterCommandRequest>> router_commands_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<uint32_t, v1::RouterServer>> routers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint32_t> sessions_ ABSL_GUARDED_BY(mu_);
  std::vector<Call<v1::ProbeRequest>> probes_asked_ ABSL_GUARDED_BY(mu_);
  bool hold_all_probes_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> held_probes_ ABSL_GUARDED_BY(mu_);
  int probes_waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, absl::StatusOr<v1::NodeHealthSample>> health_ ABSL_GUARDED_BY(mu_);
  std::vector<Call<v1::CollectHealthRequest>> health_asked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fleet::controller
