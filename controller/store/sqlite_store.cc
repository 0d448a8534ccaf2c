// Store on SQLite. Nodes are kept as serialized fleet.v1.Node records keyed by node id, so a
// new field in the proto needs no schema migration.
#include "controller/store/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace fleet::controller {
namespace {

constexpr int kSchemaVersion = 1;

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void BindText(int i, absl::string_view s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
  }
  int Step() { return sqlite3_step(stmt_); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

std::string NewControllerId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open state database ", path, ": ", msg,
                     "; check that the state directory exists and is writable by this user"));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, db));
  sqlite3_busy_timeout(db, 5000);
  auto corrupt = [&](const absl::Status& cause) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state database ", path, " is not a usable SparkFleet database (", cause.message(),
        "); restore it from a backup, or move it aside to start with an empty state "
        "(agents register again by themselves, applied recipes must be applied again)"));
  };
  // The first statement reads the file header: a garbage file fails here.
  if (absl::Status st = store->Exec("PRAGMA journal_mode=WAL"); !st.ok()) return corrupt(st);
  {
    Statement check(db, "PRAGMA quick_check");
    if (!check.ok()) return corrupt(store->Error("quick_check"));
    int step = check.Step();
    if (step != SQLITE_ROW) return corrupt(store->Error("quick_check"));
    std::string verdict = reinterpret_cast<const char*>(sqlite3_column_text(check.get(), 0));
    if (verdict != "ok") return corrupt(absl::DataLossError(verdict));
  }
  RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=NORMAL"));
  RETURN_IF_ERROR(store->Exec(
      "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, record BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, record BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS revoked_nodes (id TEXT PRIMARY KEY, record BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, record BLOB NOT NULL);"
      "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " at_unix_ms INTEGER NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,"
      " message TEXT NOT NULL);"
      "CREATE INDEX IF NOT EXISTS events_by_subject ON events(subject, id);"
      "CREATE TABLE IF NOT EXISTS fabric_results (id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " link TEXT NOT NULL, record BLOB NOT NULL);"
      "CREATE INDEX IF NOT EXISTS fabric_results_by_link ON fabric_results(link, id);"
      "CREATE TABLE IF NOT EXISTS group_events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " at_unix_ms INTEGER NOT NULL, group_name TEXT NOT NULL, record BLOB NOT NULL);"
      "CREATE INDEX IF NOT EXISTS group_events_by_time ON group_events(at_unix_ms);"
      "CREATE TABLE IF NOT EXISTS bench_runs (id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " group_name TEXT NOT NULL, application TEXT NOT NULL, record BLOB NOT NULL);"
      "CREATE INDEX IF NOT EXISTS bench_runs_by_group ON bench_runs(group_name, id);"
      "CREATE INDEX IF NOT EXISTS bench_runs_by_application ON bench_runs(application, id);"
      "CREATE TABLE IF NOT EXISTS routers (application TEXT PRIMARY KEY, node_id TEXT NOT NULL,"
      " node_name TEXT NOT NULL, agent_address TEXT NOT NULL, host TEXT NOT NULL,"
      " port INTEGER NOT NULL, generation INTEGER NOT NULL, left_behind TEXT NOT NULL);"
      // One row (slot 0): the last staging run, a serialized fleet.v1.StageRun.
      "CREATE TABLE IF NOT EXISTS last_stage_run (slot INTEGER PRIMARY KEY CHECK (slot = 0),"
      " record BLOB NOT NULL);"));
  {
    Statement get(db, "SELECT value FROM meta WHERE key='schema_version'");
    if (!get.ok()) return store->Error("read schema version");
    if (get.Step() == SQLITE_ROW) {
      int found = sqlite3_column_int(get.get(), 0);
      if (found > kSchemaVersion) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "state database %s has schema version %d but this controller understands up to "
            "%d; run the newer controller that wrote it",
            path, found, kSchemaVersion));
      }
    } else {
      Statement put(db,
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?), "
                    "('controller_id', ?)");
      put.BindText(1, absl::StrCat(kSchemaVersion));
      put.BindText(2, NewControllerId());
      if (put.Step() != SQLITE_DONE) return store->Error("write schema version");
    }
  }
  return store;
}

SqliteStore::~SqliteStore() { sqlite3_close(db_); }

absl::Status SqliteStore::Error(absl::string_view what) const {
  return absl::InternalError(
      absl::StrCat("state database ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("state database ", path_, ": ", msg));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteStore::ControllerId() {
  Statement get(db_, "SELECT value FROM meta WHERE key='controller_id'");
  if (!get.ok() || get.Step() != SQLITE_ROW) return Error("read controller id");
  return std::string(reinterpret_cast<const char*>(sqlite3_column_text(get.get(), 0)));
}

template <typename Record>
absl::StatusOr<std::vector<Record>> SqliteStore::LoadRecords(const char* table) {
  std::string sql = absl::StrCat("SELECT id, record FROM ", table, " ORDER BY id");
  Statement q(db_, sql.c_str());
  if (!q.ok()) return Error(absl::StrCat("load ", table));
  std::vector<Record> records;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    Record record;
    const void* blob = sqlite3_column_blob(q.get(), 1);
    int size = sqlite3_column_bytes(q.get(), 1);
    if (!record.ParseFromArray(blob, size)) {
      std::string id = reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 0));
      return absl::DataLossError(absl::StrCat(
          "state database ", path_, ": record ", id, " of table ", table,
          " does not parse; delete it with `sqlite3 ", path_, " \"DELETE FROM ", table,
          " WHERE id='", id, "'\"` (a node registers again, a token must be made again)"));
    }
    records.push_back(std::move(record));
  }
  if (rc != SQLITE_DONE) return Error(absl::StrCat("load ", table));
  return records;
}

absl::Status SqliteStore::PutRecord(const char* table, absl::string_view id,
                                    const std::string& blob) {
  std::string sql = absl::StrCat("INSERT OR REPLACE INTO ", table, "(id, record) VALUES(?, ?)");
  Statement put(db_, sql.c_str());
  if (!put.ok()) return Error(absl::StrCat("store into ", table));
  put.BindText(1, id);
  put.BindBlob(2, blob);
  if (put.Step() != SQLITE_DONE) return Error(absl::StrCat("store into ", table));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Node>> SqliteStore::LoadNodes() {
  return LoadRecords<v1::Node>("nodes");
}

absl::Status SqliteStore::PutNode(const v1::Node& node) {
  return PutRecord("nodes", node.identity().node_id(), node.SerializeAsString());
}

absl::StatusOr<std::vector<v1::StoredToken>> SqliteStore::LoadTokens() {
  return LoadRecords<v1::StoredToken>("tokens");
}

absl::Status SqliteStore::PutToken(const v1::StoredToken& token) {
  return PutRecord("tokens", token.id(), token.SerializeAsString());
}

absl::StatusOr<std::vector<v1::RevokedNode>> SqliteStore::LoadRevokedNodes() {
  return LoadRecords<v1::RevokedNode>("revoked_nodes");
}

absl::Status SqliteStore::PutRevokedNode(const v1::RevokedNode& node) {
  return PutRecord("revoked_nodes", node.node_id(), node.SerializeAsString());
}

absl::StatusOr<std::vector<v1::StoredGroup>> SqliteStore::LoadGroups() {
  return LoadRecords<v1::StoredGroup>("groups");
}

absl::Status SqliteStore::PutGroup(const v1::StoredGroup& group) {
  return PutRecord("groups", group.group().name(), group.SerializeAsString());
}

absl::Status SqliteStore::DeleteRecord(const char* table, absl::string_view id) {
  std::string sql = absl::StrCat("DELETE FROM ", table, " WHERE id = ?");
  Statement del(db_, sql.c_str());
  if (!del.ok()) return Error(absl::StrCat("delete from ", table));
  del.BindText(1, id);
  if (del.Step() != SQLITE_DONE) return Error(absl::StrCat("delete from ", table));
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteNode(absl::string_view node_id) {
  return DeleteRecord("nodes", node_id);
}

absl::Status SqliteStore::DeleteGroup(absl::string_view name) {
  return DeleteRecord("groups", name);
}

absl::StatusOr<std::vector<StoredEvent>> SqliteStore::LoadEvents(absl::string_view subject,
                                                                 int limit) {
  Statement q(db_,
              "SELECT at_unix_ms, kind, message FROM (SELECT id, at_unix_ms, kind, message "
              "FROM events WHERE subject = ? ORDER BY id DESC LIMIT ?) ORDER BY id");
  if (!q.ok()) return Error("load events");
  q.BindText(1, subject);
  sqlite3_bind_int(q.get(), 2, limit);
  std::vector<StoredEvent> events;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    events.push_back({absl::FromUnixMillis(sqlite3_column_int64(q.get(), 0)),
                      reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 1)),
                      reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 2))});
  }
  if (rc != SQLITE_DONE) return Error("load events");
  return events;
}

absl::Status SqliteStore::AppendEvent(absl::Time at, absl::string_view kind,
                                      absl::string_view subject, absl::string_view message) {
  Statement put(db_, "INSERT INTO events(at_unix_ms, kind, subject, message) VALUES(?, ?, ?, ?)");
  if (!put.ok()) return Error("append event");
  sqlite3_bind_int64(put.get(), 1, absl::ToUnixMillis(at));
  put.BindText(2, kind);
  put.BindText(3, subject);
  put.BindText(4, message);
  if (put.Step() != SQLITE_DONE) return Error("append event");
  return absl::OkStatus();
}

namespace {

// "tcp spark-1>spark-2": results are kept and read back per test and direction.
std::string FabricLinkKey(const v1::FabricResult& r) {
  return absl::StrCat(r.test(), " ", r.from(), ">", r.to());
}

}  // namespace

absl::Status SqliteStore::AppendFabricResult(const v1::FabricResult& result) {
  Statement put(db_, "INSERT INTO fabric_results(link, record) VALUES(?, ?)");
  if (!put.ok()) return Error("append fabric result");
  put.BindText(1, FabricLinkKey(result));
  put.BindBlob(2, result.SerializeAsString());
  if (put.Step() != SQLITE_DONE) return Error("append fabric result");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::FabricResult>> SqliteStore::LoadFabricResults(int limit) {
  // The newest `limit` rows of each link, then in link and insertion order.
  Statement q(db_,
              "SELECT record FROM fabric_results f WHERE id IN (SELECT id FROM fabric_results g "
              "WHERE g.link = f.link ORDER BY id DESC LIMIT ?) ORDER BY link, id");
  if (!q.ok()) return Error("load fabric results");
  sqlite3_bind_int(q.get(), 1, limit);
  std::vector<v1::FabricResult> results;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    v1::FabricResult r;
    const void* blob = sqlite3_column_blob(q.get(), 0);
    if (!r.ParseFromArray(blob, sqlite3_column_bytes(q.get(), 0))) {
      return absl::DataLossError("a stored fabric result does not parse; the database is damaged");
    }
    results.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return Error("load fabric results");
  return results;
}

absl::StatusOr<int64_t> SqliteStore::AppendGroupEvent(const v1::GroupEventRecord& event) {
  Statement put(db_, "INSERT INTO group_events(at_unix_ms, group_name, record) VALUES(?, ?, ?)");
  if (!put.ok()) return Error("append group event");
  sqlite3_bind_int64(put.get(), 1, event.at().seconds() * 1000 + event.at().nanos() / 1'000'000);
  put.BindText(2, event.group());
  put.BindBlob(3, event.SerializeAsString());
  if (put.Step() != SQLITE_DONE) return Error("append group event");
  return sqlite3_last_insert_rowid(db_);
}

absl::StatusOr<std::vector<v1::GroupEventRecord>> SqliteStore::LoadGroupEvents(
    const std::vector<std::string>& groups, int64_t after_id, int limit) {
  Statement q(db_, "SELECT id, group_name, record FROM group_events WHERE id > ? ORDER BY id");
  if (!q.ok()) return Error("load group events");
  sqlite3_bind_int64(q.get(), 1, after_id);
  std::vector<v1::GroupEventRecord> out;
  int rc = SQLITE_ROW;
  while (static_cast<int>(out.size()) < limit && (rc = q.Step()) == SQLITE_ROW) {
    const std::string group = reinterpret_cast<const char*>(sqlite3_column_text(q.get(), 1));
    if (!groups.empty() && std::find(groups.begin(), groups.end(), group) == groups.end()) {
      continue;
    }
    v1::GroupEventRecord e;
    const void* blob = sqlite3_column_blob(q.get(), 2);
    if (!e.ParseFromArray(blob, sqlite3_column_bytes(q.get(), 2))) {
      return absl::DataLossError(absl::StrCat("group event ", sqlite3_column_int64(q.get(), 0),
                                              " in ", path_, " does not parse"));
    }
    e.set_id(sqlite3_column_int64(q.get(), 0));
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("load group events");
  return out;
}

absl::Status SqliteStore::PruneGroupEvents(absl::Time before) {
  Statement del(db_, "DELETE FROM group_events WHERE at_unix_ms < ?");
  if (!del.ok()) return Error("prune group events");
  sqlite3_bind_int64(del.get(), 1, absl::ToUnixMillis(before));
  if (del.Step() != SQLITE_DONE) return Error("prune group events");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::AppendBenchRun(const v1::BenchRun& run) {
  Statement put(db_, "INSERT INTO bench_runs(group_name, application, record) VALUES(?, ?, ?)");
  if (!put.ok()) return Error("append bench run");
  put.BindText(1, run.group());
  put.BindText(2, run.application());
  put.BindBlob(3, run.SerializeAsString());
  if (put.Step() != SQLITE_DONE) return Error("append bench run");
  return sqlite3_last_insert_rowid(db_);
}

absl::StatusOr<std::vector<v1::BenchRun>> SqliteStore::LoadBenchRuns(absl::string_view name,
                                                                     int limit) {
  Statement q(db_,
              "SELECT id, record FROM bench_runs WHERE group_name = ?1 OR application = ?1 "
              "ORDER BY id DESC LIMIT ?2");
  if (!q.ok()) return Error("load bench runs");
  q.BindText(1, name);
  sqlite3_bind_int(q.get(), 2, limit);
  std::vector<v1::BenchRun> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    v1::BenchRun r;
    const void* blob = sqlite3_column_blob(q.get(), 1);
    if (!r.ParseFromArray(blob, sqlite3_column_bytes(q.get(), 1))) {
      return absl::DataLossError(absl::StrCat("bench run ", sqlite3_column_int64(q.get(), 0),
                                              " in ", path_, " does not parse"));
    }
    r.set_id(sqlite3_column_int64(q.get(), 0));
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return Error("load bench runs");
  std::reverse(out.begin(), out.end());
  return out;
}

// A router's left-behind agents as "ADDRESS NODE_ID" lines (neither holds a space or newline).
absl::StatusOr<std::vector<StoredRouter>> SqliteStore::LoadRouters() {
  Statement q(db_,
              "SELECT application, node_id, node_name, agent_address, host, port, generation,"
              " left_behind FROM routers ORDER BY application");
  if (!q.ok()) return Error("load routers");
  auto text = [&](int column) {
    const unsigned char* t = sqlite3_column_text(q.get(), column);
    return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t));
  };
  std::vector<StoredRouter> out;
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    StoredRouter& r = out.emplace_back();
    r.application = text(0);
    r.node_id = text(1);
    r.node_name = text(2);
    r.agent_address = text(3);
    r.host = text(4);
    r.port = static_cast<uint32_t>(sqlite3_column_int64(q.get(), 5));
    r.generation = static_cast<uint64_t>(sqlite3_column_int64(q.get(), 6));
    for (absl::string_view line : absl::StrSplit(text(7), '\n', absl::SkipEmpty())) {
      std::pair<std::string, std::string> entry = absl::StrSplit(line, absl::MaxSplits(' ', 1));
      r.left_behind[entry.first] = entry.second;
    }
  }
  if (rc != SQLITE_DONE) return Error("load routers");
  return out;
}

absl::Status SqliteStore::PutRouter(const StoredRouter& router) {
  Statement put(db_,
                "INSERT OR REPLACE INTO routers(application, node_id, node_name, agent_address,"
                " host, port, generation, left_behind) VALUES(?, ?, ?, ?, ?, ?, ?, ?)");
  if (!put.ok()) return Error("store router");
  std::string left;
  for (const auto& [address, node_id] : router.left_behind) {
    absl::StrAppend(&left, address, " ", node_id, "\n");
  }
  put.BindText(1, router.application);
  put.BindText(2, router.node_id);
  put.BindText(3, router.node_name);
  put.BindText(4, router.agent_address);
  put.BindText(5, router.host);
  sqlite3_bind_int64(put.get(), 6, router.port);
  sqlite3_bind_int64(put.get(), 7, static_cast<int64_t>(router.generation));
  put.BindText(8, left);
  if (put.Step() != SQLITE_DONE) return Error("store router");
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteRouter(absl::string_view application) {
  Statement del(db_, "DELETE FROM routers WHERE application = ?");
  if (!del.ok()) return Error("delete router");
  del.BindText(1, application);
  if (del.Step() != SQLITE_DONE) return Error("delete router");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::StageRun>> SqliteStore::LoadLastStageRun() {
  Statement q(db_, "SELECT record FROM last_stage_run WHERE slot = 0");
  if (!q.ok()) return Error("load the last stage run");
  const int rc = q.Step();
  if (rc == SQLITE_DONE) return std::optional<v1::StageRun>();
  if (rc != SQLITE_ROW) return Error("load the last stage run");
  v1::StageRun run;
  const void* blob = sqlite3_column_blob(q.get(), 0);
  const int size = sqlite3_column_bytes(q.get(), 0);
  if (!run.ParseFromArray(blob, size)) {
    return absl::DataLossError(
        absl::StrCat("state database ", path_, ": the last stage run's record does not parse"));
  }
  return std::optional<v1::StageRun>(std::move(run));
}

absl::Status SqliteStore::PutLastStageRun(const v1::StageRun& run) {
  Statement put(db_, "INSERT OR REPLACE INTO last_stage_run(slot, record) VALUES(0, ?)");
  if (!put.ok()) return Error("store the last stage run");
  put.BindBlob(1, run.SerializeAsString());
  if (put.Step() != SQLITE_DONE) return Error("store the last stage run");
  return absl::OkStatus();
}

}  // namespace fleet::controller
