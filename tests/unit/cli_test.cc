// The CLI's config resolution and output formats.
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "cli/config.h"
#include "cli/group_commands.h"
#include "cli/output.h"
#include "common/files.h"
#include "common/table.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/docker_run.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

using ::testing::HasSubstr;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fleet-cli-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::setenv("HOME", (dir_ + "/home").c_str(), 1);
    ::setenv("XDG_STATE_HOME", (dir_ + "/state").c_str(), 1);
    ::unsetenv("FLEET_CONFIG");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

void WriteConfig(const std::string& path, const std::string& controller) {
  ASSERT_TRUE(WriteFileAtomically(path, "controller: " + controller +
                                            "\nca: ca.crt\ncert: admin.crt\nkey: /k/admin.key\n")
                  .ok());
}

TEST_F(ConfigTest, FlagReplacesTheAddressAndKeepsTheCredential) {
  std::string path = dir_ + "/c.yaml";
  WriteConfig(path, "10.0.0.1:7100");
  ::setenv("FLEET_CONFIG", path.c_str(), 1);
  auto c = ResolveConfig("10.0.0.9:7100");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->controller, "10.0.0.9:7100");
  // Relative credential paths are taken from the config file's folder.
  EXPECT_EQ(c->ca, dir_ + "/ca.crt");
  EXPECT_EQ(c->key, "/k/admin.key");
}

TEST_F(ConfigTest, ConfigWithoutCredentialIsNamedWhenConnecting) {
  std::string path = dir_ + "/c.yaml";
  ASSERT_TRUE(WriteFileAtomically(path, "controller: 10.0.0.1:7100\n").ok());
  auto c = LoadConfigFile(path);
  ASSERT_TRUE(c.ok());
  auto transport = AdminTransport(*c);
  ASSERT_FALSE(transport.ok());
  EXPECT_THAT(transport.status().message(), HasSubstr("no admin credential"));
}

TEST_F(ConfigTest, EnvironmentFileIsRead) {
  std::string path = dir_ + "/c.yaml";
  WriteConfig(path, "10.0.0.1:7100");
  ::setenv("FLEET_CONFIG", path.c_str(), 1);
  auto c = ResolveConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->controller, "10.0.0.1:7100");
  EXPECT_EQ(c->source, path);
}

TEST_F(ConfigTest, MissingEnvironmentFileIsNamed) {
  ::setenv("FLEET_CONFIG", (dir_ + "/nope.yaml").c_str(), 1);
  auto c = ResolveConfig("");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("FLEET_CONFIG"));
  EXPECT_THAT(c.status().message(), HasSubstr("nope.yaml"));
}

TEST_F(ConfigTest, UnknownKeyIsAnErrorWithItsLine) {
  std::string path = dir_ + "/c.yaml";
  ASSERT_TRUE(WriteFileAtomically(path, "controller: a:1\ncontroler: b:2\n").ok());
  auto c = LoadConfigFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(path + ":2: unknown key `controler`"));
  EXPECT_THAT(c.status().message(), HasSubstr("controller, ca, cert, key"));
}

TEST_F(ConfigTest, BrokenYamlNamesLineAndColumn) {
  std::string path = dir_ + "/c.yaml";
  ASSERT_TRUE(WriteFileAtomically(path, "controller: [a\n").ok());
  auto c = LoadConfigFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr(path + ":"));
}

TEST_F(ConfigTest, MostRecentLocalClusterIsTheLastResort) {
  auto none = ResolveConfig("");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("fleet up"));
  std::string cluster = dir_ + "/cluster";
  ASSERT_TRUE(MakeDirectories(cluster).ok());
  WriteConfig(cluster + "/config.yaml", "127.0.0.1:4242");
  ASSERT_TRUE(RememberLocalCluster(cluster).ok());
  auto c = ResolveConfig("");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->controller, "127.0.0.1:4242");
  // A user config file takes precedence over the local cluster.
  ASSERT_TRUE(MakeDirectories(dir_ + "/home/.config/fleet").ok());
  WriteConfig(dir_ + "/home/.config/fleet/config.yaml", "10.9.9.9:7100");
  EXPECT_EQ(ResolveConfig("")->controller, "10.9.9.9:7100");
}

v1::ListNodesResponse TwoNodes() {
  v1::ListNodesResponse list;
  list.mutable_now()->set_seconds(1000);
  for (int i = 1; i <= 2; ++i) {
    v1::Node* n = list.add_nodes();
    n->mutable_identity()->set_name("spark-" + std::to_string(i));
    n->mutable_identity()->set_node_id("id" + std::to_string(i));
    n->set_address("10.0.0." + std::to_string(i + 1) + ":7101");
    n->set_state(i == 1 ? v1::NODE_STATE_READY : v1::NODE_STATE_LOST);
    n->set_agent_version("0.1.0");
    n->mutable_last_heartbeat()->set_seconds(1000 - 7 * i);
    n->mutable_facts()->set_cpu_count(20);
  }
  return list;
}

TEST(OutputTest, TableHasKubectlLayout) {
  std::string out = RenderNodes(TwoNodes(), OutputFormat::kTable);
  EXPECT_EQ(out,
            "NAME      ADDRESS         STATE   LAST-HEARTBEAT   VERSION\n"
            "spark-1   10.0.0.2:7101   Ready   7.0s             0.1.0\n"
            "spark-2   10.0.0.3:7101   Lost    14s              0.1.0\n");
}

TEST(OutputTest, JsonAndYamlCarryTheSameDocument) {
  std::string json = RenderNodes(TwoNodes(), OutputFormat::kJson);
  auto doc = nlohmann::json::parse(json);
  EXPECT_EQ(doc["kind"], "NodeList");
  ASSERT_EQ(doc["items"].size(), 2u);
  EXPECT_EQ(doc["items"][1]["state"], "Lost");
  EXPECT_EQ(doc["items"][0]["facts"]["cpuCount"], 20);
  EXPECT_DOUBLE_EQ(doc["items"][1]["lastHeartbeatAgeSeconds"].get<double>(), 14.0);
  std::string yaml = RenderNodes(TwoNodes(), OutputFormat::kYaml);
  EXPECT_THAT(yaml, HasSubstr("kind: NodeList"));
  EXPECT_THAT(yaml, HasSubstr("state: Lost"));
}

TEST(OutputTest, JsonAndYamlUseTheTablesWordsForStates) {
  v1::Group group;
  group.set_name("ds4");
  group.set_state(v1::GROUP_STATE_READY);
  v1::GroupRank* rank = group.add_ranks();
  rank->mutable_status()->set_state(v1::SHARD_STATE_RUNNING);
  nlohmann::ordered_json doc = ProtoToJson(group);
  EXPECT_EQ(doc["state"], "Ready") << doc.dump();
  EXPECT_EQ(doc["ranks"][0]["status"]["state"], "Running") << doc.dump();
  EXPECT_THAT(PrintDocument(doc, "yaml"), ::testing::HasSubstr("state: Ready"));
  EXPECT_EQ(EnumWord(*v1::GroupState_descriptor()->FindValueByNumber(v1::GROUP_STATE_UNSPECIFIED)),
            "Unknown");
  EXPECT_EQ(EnumWord(*v1::HeartbeatVerdict_descriptor()->FindValueByNumber(
                v1::HEARTBEAT_VERDICT_REPORT_SHARDS)),
            "ReportShards");
}

TEST(OutputTest, BytesThatAreNotUtf8ArePrintedNotThrown) {
  nlohmann::ordered_json doc = {{"line", std::string("NCCL \xff\xfe ok")}};
  EXPECT_EQ(DumpJson(doc), "{\n  \"line\": \"NCCL \xEF\xBF\xBD\xEF\xBF\xBD ok\"\n}\n");
  EXPECT_THAT(PrintDocument(doc, "yaml"), ::testing::HasSubstr("NCCL \xEF\xBF\xBD\xEF\xBF\xBD ok"));
}

TEST(OutputTest, UnknownFormatNamesTheChoices) {
  auto f = ParseOutputFormat("xml");
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr("table, wide, json, yaml"));
}

TEST(OutputTest, AgesFollowKubectl) {
  EXPECT_EQ(FormatAge(-1), "never");
  EXPECT_EQ(FormatAge(0.42), "0.4s");
  EXPECT_EQ(FormatAge(59), "59s");
  EXPECT_EQ(FormatAge(600), "10m");
  EXPECT_EQ(FormatAge(3 * 3600), "3h");
  EXPECT_EQ(FormatAge(3 * 86400), "3d");
}

TEST(TableTest, PadsShortRows) {
  Table t({"A", "B"});
  t.AddRow({"x"});
  EXPECT_EQ(t.Render(), "A   B\nx\n");
}

TEST(PlanFlags, OutputFormatAndOverridesShareDashO) {
  std::string format;
  std::vector<std::string> overrides;
  ASSERT_TRUE(
      SplitOutputFlags({"port=9000", "json", "tensor_parallel=4"}, &format, &overrides).ok());
  EXPECT_EQ(format, "json");
  EXPECT_EQ(overrides, (std::vector<std::string>{"port=9000", "tensor_parallel=4"}));
  format.clear();
  overrides.clear();
  absl::Status two = SplitOutputFlags({"json", "yaml"}, &format, &overrides);
  EXPECT_THAT(std::string(two.message()), ::testing::HasSubstr("two output formats"));
  format.clear();
  absl::Status bad = SplitOutputFlags({"porty"}, &format, &overrides);
  EXPECT_THAT(std::string(bad.message()),
              ::testing::HasSubstr("neither an output format (json, yaml) nor an override"));
}

TEST(PlanFlags, InventoryNamesItsErrorsAndDefaultsTheFabricAddress) {
  std::string dir = ::testing::TempDir();
  std::string good = dir + "/inventory.yaml";
  ASSERT_TRUE(WriteFileAtomically(good,
                                  "nodes:\n"
                                  "  - name: spark-1\n"
                                  "    address: 192.168.100.11\n"
                                  "    fabric_interface: enp1s0f1np1\n"
                                  "    rdma_devices: [rocep1s0f1, roceP2p1s0f1]\n"
                                  "    gpus: true\n")
                  .ok());
  absl::StatusOr<std::vector<engine::NodeView>> nodes = LoadInventory(good);
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].fabric_address, "192.168.100.11");
  EXPECT_EQ((*nodes)[0].rdma_devices.size(), 2u);
  EXPECT_TRUE((*nodes)[0].has_gpus);
  EXPECT_FALSE((*nodes)[0].has_infiniband);

  std::string typo = dir + "/typo.yaml";
  ASSERT_TRUE(WriteFileAtomically(typo, "nodes:\n  - name: a\n    adress: 10.0.0.1\n").ok());
  absl::StatusOr<std::vector<engine::NodeView>> bad = LoadInventory(typo);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              ::testing::HasSubstr("typo.yaml:3:5: unknown key \"adress\""));
  EXPECT_FALSE(LoadInventory(dir + "/missing.yaml").ok());
}

// An offline plan cannot ask the nodes' agents: its docker lines use the agent's defaults, leave
// "~/" for the pasting shell, and a note says what may differ and how to check before pasting.
TEST(PlanCommand, OfflineDockerLineSaysWhatItAssumes) {
  const std::string root = FLEET_SOURCE_DIR;
  std::ostringstream captured;
  std::streambuf* old = std::cout.rdbuf(captured.rdbuf());
  const int code = Plan(Globals{.output = "json"},
                        RecipeFlags{.recipe = root + "/recipes/deepseek-v4-flash-2x.yaml"}, "",
                        root + "/tests/fixtures/inventory/two-sparks.yaml");
  std::cout.rdbuf(old);
  ASSERT_EQ(code, 0) << captured.str();
  const nlohmann::json doc = nlohmann::json::parse(captured.str());
  const nlohmann::json& group = doc["groups"][0];
  EXPECT_THAT(group["notes"].dump(),
              HasSubstr("offline plan: a mount under ~ is the agent's $HOME"));
  EXPECT_THAT(group["notes"].dump(), HasSubstr("unrecognized arguments: serve"));
  const std::vector<std::string> line = group["ranks"][1]["dockerRun"];
  EXPECT_THAT(line, ::testing::Contains("--env-file"));
  EXPECT_THAT(line,
              ::testing::Contains("/var/lib/fleet-agent/shards/deepseek-v4-flash-2x.r1.g1.env"));
  EXPECT_THAT(line, ::testing::Contains("~/.cache/huggingface:/root/.cache/huggingface"));
  EXPECT_THAT(engine::ShellLine(line),
              HasSubstr(" -v ~/.cache/huggingface:/root/.cache/huggingface "));
  EXPECT_THAT(captured.str(), ::testing::Not(HasSubstr("AGENT_STATE_DIR")));
}

}  // namespace
}  // namespace fleet::cli
