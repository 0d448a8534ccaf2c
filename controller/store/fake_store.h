// An in-memory Store for unit tests, with a switch to make writes fail.
#pragma once

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "controller/store/store.h"

namespace fleet::controller {

class FakeStore final : public Store {
 public:
  struct Event {
    absl::Time at;
    std::string kind, subject, message;
  };

  absl::StatusOr<std::string> ControllerId() override { return std::string("fake-controller"); }
  absl::StatusOr<std::vector<v1::Node>> LoadNodes() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Node> out;
    for (const auto& [id, node] : nodes_) out.push_back(node);
    return out;
  }
  absl::Status PutNode(const v1::Node& node) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    nodes_[node.identity().node_id()] = node;
    return absl::OkStatus();
  }
  absl::Status DeleteNode(absl::string_view node_id) override {
    absl::MutexLock lock(&mu_);
    nodes_.erase(std::string(node_id));
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::StoredToken>> LoadTokens() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::StoredToken> out;
    for (const auto& [id, token] : tokens_) out.push_back(token);
    return out;
  }
  absl::Status PutToken(const v1::StoredToken& token) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    tokens_[token.id()] = token;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::RevokedNode>> LoadRevokedNodes() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::RevokedNode> out;
    for (const auto& [id, node] : revoked_) out.push_back(node);
    return out;
  }
  absl::Status PutRevokedNode(const v1::RevokedNode& node) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    revoked_[node.node_id()] = node;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::StoredGroup>> LoadGroups() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::StoredGroup> out;
    for (const auto& [name, group] : groups_) out.push_back(group);
    return out;
  }
  absl::Status PutGroup(const v1::StoredGroup& group) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    groups_[group.group().name()] = group;
    return absl::OkStatus();
  }
  absl::Status DeleteGroup(absl::string_view name) override {
    absl::MutexLock lock(&mu_);
    groups_.erase(std::string(name));
    return absl::OkStatus();
  }
  absl::Status AppendEvent(absl::Time at, absl::string_view kind, absl::string_view subject,
                           absl::string_view message) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    events_.push_back({at, std::string(kind), std::string(subject), std::string(message)});
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<StoredEvent>> LoadEvents(absl::string_view subject,
                                                      int limit) override {
    absl::MutexLock lock(&mu_);
    std::vector<StoredEvent> out;
    for (const Event& e : events_) {
      if (e.subject == subject) out.push_back({e.at, e.kind, e.message});
    }
    if (static_cast<int>(out.size()) > limit) out.erase(out.begin(), out.end() - limit);
    return out;
  }
  absl::Status AppendFabricResult(const v1::FabricResult& result) override {
    absl::MutexLock lock(&mu_);
    fabric_results_.push_back(result);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<v1::FabricResult>> LoadFabricResults(int limit) override {
    absl::MutexLock lock(&mu_);
    std::map<std::string, std::vector<v1::FabricResult>> by_link;
    for (const v1::FabricResult& r : fabric_results_) {
      by_link[absl::StrCat(r.test(), " ", r.from(), ">", r.to())].push_back(r);
    }
    std::vector<v1::FabricResult> out;
    for (auto& [link, results] : by_link) {
      size_t skip = results.size() > static_cast<size_t>(limit) ? results.size() - limit : 0;
      out.insert(out.end(), results.begin() + static_cast<long>(skip), results.end());
    }
    return out;
  }

  absl::StatusOr<int64_t> AppendGroupEvent(const v1::GroupEventRecord& event) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    group_events_.push_back(event);
    group_events_.back().set_id(++last_group_event_id_);
    return last_group_event_id_;
  }
  absl::StatusOr<std::vector<v1::GroupEventRecord>> LoadGroupEvents(
      const std::vector<std::string>& groups, int64_t after_id, int limit) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::GroupEventRecord> out;
    for (const v1::GroupEventRecord& e : group_events_) {
      if (e.id() <= after_id || static_cast<int>(out.size()) >= limit) continue;
      if (groups.empty() || std::find(groups.begin(), groups.end(), e.group()) != groups.end()) {
        out.push_back(e);
      }
    }
    return out;
  }
  absl::Status PruneGroupEvents(absl::Time before) override {
    absl::MutexLock lock(&mu_);
    std::erase_if(group_events_, [&](const v1::GroupEventRecord& e) {
      return absl::FromUnixSeconds(e.at().seconds()) < before;
    });
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> AppendBenchRun(const v1::BenchRun& run) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    bench_runs_.push_back(run);
    bench_runs_.back().set_id(static_cast<int64_t>(bench_runs_.size()));
    return bench_runs_.back().id();
  }
  absl::StatusOr<std::vector<v1::BenchRun>> LoadBenchRuns(absl::string_view name,
                                                          int limit) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::BenchRun> out;
    for (const v1::BenchRun& r : bench_runs_) {
      if (r.group() == name || r.application() == name) out.push_back(r);
    }
    if (static_cast<int>(out.size()) > limit) out.erase(out.begin(), out.end() - limit);
    return out;
  }

  absl::StatusOr<std::vector<StoredRouter>> LoadRouters() override {
    absl::MutexLock lock(&mu_);
    std::vector<StoredRouter> out;
    for (const auto& [application, router] : routers_) out.push_back(router);
    return out;
  }
  absl::Status PutRouter(const StoredRouter& router) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    routers_[router.application] = router;
    return absl::OkStatus();
  }
  absl::Status DeleteRouter(absl::string_view application) override {
    absl::MutexLock lock(&mu_);
    routers_.erase(std::string(application));
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<v1::StageRun>> LoadLastStageRun() override {
    absl::MutexLock lock(&mu_);
    return last_stage_run_;
  }
  absl::Status PutLastStageRun(const v1::StageRun& run) override {
    absl::MutexLock lock(&mu_);
    if (!fail_writes_.ok()) return fail_writes_;
    last_stage_run_ = run;
    ++stage_run_writes_;
    return absl::OkStatus();
  }

  void FailWrites(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_writes_ = std::move(status);
  }
  std::vector<Event> events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  int stage_run_writes() const {
    absl::MutexLock lock(&mu_);
    return stage_run_writes_;
  }
  std::map<std::string, v1::Node> nodes() const {
    absl::MutexLock lock(&mu_);
    return nodes_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, v1::Node> nodes_;
  std::map<std::string, v1::StoredToken> tokens_;
  std::map<std::string, v1::StoredGroup> groups_;
  std::map<std::string, v1::RevokedNode> revoked_;
  std::vector<v1::FabricResult> fabric_results_;
  std::vector<Event> events_;
  std::vector<v1::GroupEventRecord> group_events_;
  int64_t last_group_event_id_ = 0;
  int stage_run_writes_ = 0;
  std::vector<v1::BenchRun> bench_runs_;
  std::map<std::string, StoredRouter> routers_;
  std::optional<v1::StageRun> last_stage_run_;
  absl::Status fail_writes_;
};

}  // namespace fleet::controller
