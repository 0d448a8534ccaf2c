// SqliteStore on real files: round trips, reopening, and refusing a corrupt or newer database
// without touching it.
#include "controller/store/sqlite_store.h"

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "common/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::controller {
namespace {

using ::testing::HasSubstr;

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/fleet.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

v1::Node MakeNode(const std::string& id, v1::NodeState state) {
  v1::Node node;
  node.mutable_identity()->set_node_id(id);
  node.mutable_identity()->set_name("spark-" + id);
  node.set_address("10.0.0.2:7101");
  node.set_state(state);
  node.mutable_facts()->set_os("Ubuntu 24.04");
  return node;
}

TEST_F(SqliteStoreTest, NodesAndControllerIdSurviveReopening) {
  std::string id;
  {
    auto store = SqliteStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PutNode(MakeNode("a", v1::NODE_STATE_READY)).ok());
    ASSERT_TRUE((*store)->PutNode(MakeNode("b", v1::NODE_STATE_LOST)).ok());
    ASSERT_TRUE((*store)->PutNode(MakeNode("a", v1::NODE_STATE_SUSPECT)).ok());
    ASSERT_TRUE((*store)->AppendEvent(absl::Now(), "node-registered", "a", "x").ok());
    id = *(*store)->ControllerId();
  }
  auto store = SqliteStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->ControllerId(), id);
  auto nodes = (*store)->LoadNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].state(), v1::NODE_STATE_SUSPECT);
  EXPECT_EQ((*nodes)[0].facts().os(), "Ubuntu 24.04");
  ASSERT_TRUE((*store)->DeleteNode("a").ok());
  EXPECT_EQ((*store)->LoadNodes()->size(), 1u);
}

TEST_F(SqliteStoreTest, GarbageFileIsRefusedAndLeftAlone) {
  const std::string garbage(4096, 'x');
  ASSERT_TRUE(WriteFileAtomically(path_, garbage).ok());
  auto store = SqliteStore::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_THAT(store.status().message(), HasSubstr(path_));
  EXPECT_THAT(store.status().message(), HasSubstr("move it aside"));
  EXPECT_EQ(*ReadFileToString(path_), garbage);
}

TEST_F(SqliteStoreTest, NewerSchemaIsRefused) {
  ASSERT_TRUE(SqliteStore::Open(path_).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value='99' WHERE key='schema_version'", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteStore::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 99"));
}

TEST_F(SqliteStoreTest, UnwritableDirectoryIsAClearError) {
  auto store = SqliteStore::Open(dir_ + "/missing/dir/fleet.db");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("cannot open state database"));
}

TEST_F(SqliteStoreTest, GroupEventsSurviveReopeningAndArePrunedByAge) {
  auto event = [](int64_t unix_seconds, const std::string& group, const std::string& action) {
    v1::GroupEventRecord e;
    e.mutable_at()->set_seconds(unix_seconds);
    e.set_group(group);
    e.set_generation(3);
    e.set_node("spark-1");
    e.set_rank(0);
    e.set_reason("rank 0 on spark-1 ended (killed by signal 9)");
    e.set_action(action);
    return e;
  };
  {
    auto store = SqliteStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<int64_t> first = (*store)->AppendGroupEvent(event(1000, "ds4", "restart"));
    ASSERT_TRUE(first.ok()) << first.status();
    absl::StatusOr<int64_t> second = (*store)->AppendGroupEvent(event(2000, "other", "fail"));
    ASSERT_TRUE(second.ok());
    EXPECT_GT(*second, *first);
    ASSERT_TRUE((*store)->AppendGroupEvent(event(3000, "ds4", "started generation 4")).ok());
  }
  auto store = SqliteStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::vector<v1::GroupEventRecord>> ds4 =
      (*store)->LoadGroupEvents({"ds4"}, 0, 100);
  ASSERT_TRUE(ds4.ok()) << ds4.status();
  ASSERT_EQ(ds4->size(), 2u);
  EXPECT_EQ((*ds4)[0].action(), "restart");
  EXPECT_EQ((*ds4)[0].reason(), "rank 0 on spark-1 ended (killed by signal 9)");
  EXPECT_EQ((*ds4)[1].action(), "started generation 4");
  // -f asks for what came after the last id it printed.
  absl::StatusOr<std::vector<v1::GroupEventRecord>> after =
      (*store)->LoadGroupEvents({}, (*ds4)[0].id(), 100);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->size(), 2u);
  ASSERT_TRUE((*store)->PruneGroupEvents(absl::FromUnixSeconds(2500)).ok());
  absl::StatusOr<std::vector<v1::GroupEventRecord>> kept = (*store)->LoadGroupEvents({}, 0, 100);
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].at().seconds(), 3000);
}

TEST_F(SqliteStoreTest, RouterPlacementsSurviveReopeningAndAreReplacedAndDeleted) {
  {
    auto store = SqliteStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    StoredRouter r{.application = "ds4",
                   .node_id = "id1",
                   .node_name = "spark-1",
                   .agent_address = "10.0.0.1:7101",
                   .host = "10.0.0.1",
                   .port = 8100,
                   .generation = 1796567089584,
                   .left_behind = {{"10.0.0.2:7101", "id2"}, {"10.0.0.3:7101", "id3"}}};
    ASSERT_TRUE((*store)->PutRouter(r).ok());
    r.port = 8101;
    ASSERT_TRUE((*store)->PutRouter(r).ok());
    ASSERT_TRUE((*store)->PutRouter({.application = "other", .port = 8100}).ok());
    ASSERT_TRUE((*store)->DeleteRouter("other").ok());
  }
  auto store = SqliteStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::vector<StoredRouter>> routers = (*store)->LoadRouters();
  ASSERT_TRUE(routers.ok()) << routers.status();
  ASSERT_EQ(routers->size(), 1u);
  const StoredRouter& r = (*routers)[0];
  EXPECT_EQ(r.application, "ds4");
  EXPECT_EQ(r.node_name, "spark-1");
  EXPECT_EQ(r.agent_address, "10.0.0.1:7101");
  EXPECT_EQ(r.host, "10.0.0.1");
  EXPECT_EQ(r.port, 8101u);
  EXPECT_EQ(r.generation, 1796567089584u);
  EXPECT_EQ(r.left_behind, (std::map<std::string, std::string>{{"10.0.0.2:7101", "id2"},
                                                               {"10.0.0.3:7101", "id3"}}));
}

TEST_F(SqliteStoreTest, TheLastStageRunSurvivesReopeningAndIsReplacedWhole) {
  {
    auto store = SqliteStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<std::optional<v1::StageRun>> none = (*store)->LoadLastStageRun();
    ASSERT_TRUE(none.ok()) << none.status();
    EXPECT_FALSE(none->has_value());
    v1::StageRun first;
    first.set_id("stage-1");
    first.set_state("copying");
    first.add_nodes()->set_node("spark-2");
    first.add_nodes()->set_node("spark-3");
    ASSERT_TRUE((*store)->PutLastStageRun(first).ok());
    v1::StageRun second;
    second.set_id("stage-2");
    second.set_kind("model");
    second.set_state("done");
    v1::StageNodeResult* n = second.add_nodes();
    n->set_node("spark-2");
    n->set_bytes_sent(1ull << 33);
    n->set_tree_sha256(std::string(64, 'e'));
    ASSERT_TRUE((*store)->PutLastStageRun(second).ok());
  }
  auto store = SqliteStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::optional<v1::StageRun>> last = (*store)->LoadLastStageRun();
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ((*last)->id(), "stage-2");
  EXPECT_EQ((*last)->state(), "done");
  ASSERT_EQ((*last)->nodes_size(), 1);
  EXPECT_EQ((*last)->nodes(0).bytes_sent(), 1ull << 33);
  EXPECT_EQ((*last)->nodes(0).tree_sha256(), std::string(64, 'e'));
}

TEST_F(SqliteStoreTest, BenchRunsSurviveReopeningAndAreFoundByGroupOrApplication) {
  auto run = [](const std::string& group, const std::string& application, double tps) {
    v1::BenchRun r;
    r.set_group(group);
    r.set_application(application);
    r.set_revision("1a2b3c");
    v1::BenchRow& row = *r.add_rows();
    row.set_pp(2048);
    row.set_runs(3);
    row.mutable_tg_tps_total()->set_mean(tps);
    return r;
  };
  {
    auto store = SqliteStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<int64_t> first = (*store)->AppendBenchRun(run("ds4-0", "ds4", 40));
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE((*store)->AppendBenchRun(run("other", "other", 10)).ok());
    absl::StatusOr<int64_t> third = (*store)->AppendBenchRun(run("ds4-1", "ds4", 35));
    ASSERT_TRUE(third.ok());
    EXPECT_GT(*third, *first);
  }
  auto store = SqliteStore::Open(path_);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::vector<v1::BenchRun>> app = (*store)->LoadBenchRuns("ds4", 10);
  ASSERT_TRUE(app.ok()) << app.status();
  ASSERT_EQ(app->size(), 2u);
  EXPECT_EQ((*app)[0].group(), "ds4-0");  // oldest first
  EXPECT_EQ((*app)[1].group(), "ds4-1");
  EXPECT_EQ((*app)[1].rows(0).tg_tps_total().mean(), 35);
  absl::StatusOr<std::vector<v1::BenchRun>> one = (*store)->LoadBenchRuns("ds4-1", 10);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_GT((*one)[0].id(), 0);
  absl::StatusOr<std::vector<v1::BenchRun>> last = (*store)->LoadBenchRuns("ds4", 1);
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->size(), 1u);
  EXPECT_EQ((*last)[0].group(), "ds4-1");
}

}  // namespace
}  // namespace fleet::controller
