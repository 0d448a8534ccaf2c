// Store on an embedded SQLite database (WAL mode) in the controller's state directory.
#pragma once

#include <memory>
#include <string>

#include "controller/store/store.h"

struct sqlite3;

namespace fleet::controller {

// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store,
//   SqliteStore::Open("/var/lib/fleet/fleet.db"));
class SqliteStore final : public Store {
 public:
  // Opens or creates the database, checks its integrity and schema version. A file that is
  // not a SQLite database, is corrupt, or has a newer schema gives FailedPrecondition with
  // what to do; nothing is overwritten.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  absl::StatusOr<std::string> ControllerId() override;
  absl::StatusOr<std::vector<v1::Node>> LoadNodes() override;
  absl::Status PutNode(const v1::Node& node) override;
  absl::Status DeleteNode(absl::string_view node_id) override;
  absl::StatusOr<std::vector<v1::StoredToken>> LoadTokens() override;
  absl::Status PutToken(const v1::StoredToken& token) override;
  absl::StatusOr<std::vector<v1::RevokedNode>> LoadRevokedNodes() override;
  absl::Status PutRevokedNode(const v1::RevokedNode& node) override;
  absl::StatusOr<std::vector<v1::StoredGroup>> LoadGroups() override;
  absl::Status PutGroup(const v1::StoredGroup& group) override;
  absl::Status DeleteGroup(absl::string_view name) override;
  absl::Status AppendEvent(absl::Time at, absl::string_view kind, absl::string_view subject,
                           absl::string_view message) override;
  absl::StatusOr<std::vector<StoredEvent>> LoadEvents(absl::string_view subject,
                                                      int limit) override;
  absl::Status AppendFabricResult(const v1::FabricResult& result) override;
  absl::StatusOr<std::vector<v1::FabricResult>> LoadFabricResults(int limit) override;
  absl::StatusOr<int64_t> AppendGroupEvent(const v1::GroupEventRecord& event) override;
  absl::StatusOr<std::vector<v1::GroupEventRecord>> LoadGroupEvents(
      const std::vector<std::string>& groups, int64_t after_id, int limit) override;
  absl::Status PruneGroupEvents(absl::Time before) override;
  absl::StatusOr<int64_t> AppendBenchRun(const v1::BenchRun& run) override;
  absl::StatusOr<std::vector<v1::BenchRun>> LoadBenchRuns(absl::string_view name,
                                                          int limit) override;
  absl::StatusOr<std::vector<StoredRouter>> LoadRouters() override;
  absl::Status PutRouter(const StoredRouter& router) override;
  absl::Status DeleteRouter(absl::string_view application) override;
  absl::StatusOr<std::optional<v1::StageRun>> LoadLastStageRun() override;
  absl::Status PutLastStageRun(const v1::StageRun& run) override;

 private:
  // Every record table maps an id to a serialized proto.
  template <typename Record>
  absl::StatusOr<std::vector<Record>> LoadRecords(const char* table);
  absl::Status PutRecord(const char* table, absl::string_view id, const std::string& blob);
  absl::Status DeleteRecord(const char* table, absl::string_view id);

  SqliteStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  absl::Status Exec(const char* sql);
  absl::Status Error(absl::string_view what) const;

  std::string path_;
  sqlite3* db_;
};

}  // namespace fleet::controller
