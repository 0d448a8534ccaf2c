// SqliteStore on real files: round trips, reopening, and refusing a corrupt or newer database
// without touching it.
#include "controller/store/sqlite_store.h"

#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>

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

}  // namespace
}  // namespace fleet::controller
