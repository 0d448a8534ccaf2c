// `fleet export`: LeaderWorkerSet manifests checked field by field against LWS's API types and
// Kubernetes' core types, Slurm scripts, the errors and notes of what a target cannot express,
// and golden exports of the repo's recipes (tests/fixtures/golden/export).
#include "launch/export/export.h"

#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "launch/export/yaml_writer.h"
#include "yaml-cpp/yaml.h"

namespace fleet::engine {
namespace {

using ::testing::HasSubstr;

// The fields SparkFleet may write, per object type, with the type of each field's value. The
// LWS types are those of kubernetes-sigs/lws api/leaderworkerset/v1/leaderworkerset_types.go
// (json tags of LeaderWorkerSetSpec, LeaderWorkerTemplate, RolloutStrategy,
// RollingUpdateConfiguration, NetworkConfig, SubGroupPolicy); the others are k8s.io/api/core/v1
// types, limited to the fields an export uses. "" is a scalar; "map" a map of strings; a
// leading "[]" a list of that type.
const std::map<std::string, std::map<std::string, std::string>>& Schema() {
  static const auto* schema = new std::map<std::string, std::map<std::string, std::string>>{
      {"LeaderWorkerSet",
       {{"apiVersion", ""},
        {"kind", ""},
        {"metadata", "ObjectMeta"},
        {"spec", "LeaderWorkerSetSpec"}}},
      {"LeaderWorkerSetSpec",
       {{"replicas", ""},
        {"leaderWorkerTemplate", "LeaderWorkerTemplate"},
        {"rolloutStrategy", "RolloutStrategy"},
        {"startupPolicy", ""},
        {"networkConfig", "NetworkConfig"}}},
      {"LeaderWorkerTemplate",
       {{"leaderTemplate", "PodTemplateSpec"},
        {"workerTemplate", "PodTemplateSpec"},
        {"size", ""},
        {"restartPolicy", ""},
        {"subGroupPolicy", "SubGroupPolicy"}}},
      {"RolloutStrategy",
       {{"type", ""}, {"rollingUpdateConfiguration", "RollingUpdateConfiguration"}}},
      {"RollingUpdateConfiguration", {{"partition", ""}, {"maxUnavailable", ""}, {"maxSurge", ""}}},
      {"NetworkConfig", {{"subdomainPolicy", ""}}},
      {"SubGroupPolicy", {{"subGroupPolicyType", ""}, {"subGroupSize", ""}}},
      {"ObjectMeta", {{"name", ""}, {"namespace", ""}, {"labels", "map"}, {"annotations", "map"}}},
      {"PodTemplateSpec", {{"metadata", "ObjectMeta"}, {"spec", "PodSpec"}}},
      {"PodSpec",
       {{"hostNetwork", ""},
        {"dnsPolicy", ""},
        {"initContainers", "[]Container"},
        {"containers", "[]Container"},
        {"volumes", "[]Volume"},
        {"nodeSelector", "map"}}},
      {"Container",
       {{"name", ""},
        {"image", ""},
        {"command", "[]"},
        {"args", "[]"},
        {"env", "[]EnvVar"},
        {"ports", "[]ContainerPort"},
        {"startupProbe", "Probe"},
        {"readinessProbe", "Probe"},
        {"resources", "ResourceRequirements"},
        {"securityContext", "SecurityContext"},
        {"volumeMounts", "[]VolumeMount"}}},
      {"EnvVar", {{"name", ""}, {"value", ""}, {"valueFrom", "EnvVarSource"}}},
      {"EnvVarSource", {{"fieldRef", "ObjectFieldSelector"}}},
      {"ObjectFieldSelector", {{"apiVersion", ""}, {"fieldPath", ""}}},
      {"ContainerPort", {{"name", ""}, {"containerPort", ""}, {"protocol", ""}}},
      {"Probe",
       {{"httpGet", "HTTPGetAction"},
        {"periodSeconds", ""},
        {"timeoutSeconds", ""},
        {"failureThreshold", ""},
        {"successThreshold", ""},
        {"initialDelaySeconds", ""}}},
      {"HTTPGetAction", {{"path", ""}, {"port", ""}, {"host", ""}, {"scheme", ""}}},
      {"ResourceRequirements", {{"limits", "map"}, {"requests", "map"}}},
      {"SecurityContext", {{"capabilities", "Capabilities"}, {"privileged", ""}}},
      {"Capabilities", {{"add", "[]"}, {"drop", "[]"}}},
      {"VolumeMount", {{"name", ""}, {"mountPath", ""}, {"readOnly", ""}, {"subPath", ""}}},
      {"Volume",
       {{"name", ""}, {"emptyDir", "EmptyDirVolumeSource"}, {"hostPath", "HostPathVolumeSource"}}},
      {"EmptyDirVolumeSource", {{"medium", ""}, {"sizeLimit", ""}}},
      {"HostPathVolumeSource", {{"path", ""}, {"type", ""}}},
      {"Service",
       {{"apiVersion", ""}, {"kind", ""}, {"metadata", "ObjectMeta"}, {"spec", "ServiceSpec"}}},
      {"ServiceSpec", {{"selector", "map"}, {"ports", "[]ServicePort"}, {"type", ""}}},
      {"ServicePort", {{"name", ""}, {"port", ""}, {"targetPort", ""}, {"protocol", ""}}},
  };
  return *schema;
}

// Every problem of `node` against `type`, one "path: problem" each.
void Check(const YAML::Node& node, const std::string& type, const std::string& path,
           std::vector<std::string>* problems) {
  if (type.empty()) {
    if (!node.IsScalar()) problems->push_back(absl::StrCat(path, ": expected a scalar"));
    return;
  }
  if (absl::StartsWith(type, "[]")) {
    if (!node.IsSequence()) {
      problems->push_back(absl::StrCat(path, ": expected a list"));
      return;
    }
    for (size_t k = 0; k < node.size(); ++k) {
      Check(node[k], type.substr(2), absl::StrCat(path, "[", k, "]"), problems);
    }
    return;
  }
  if (!node.IsMap()) {
    problems->push_back(absl::StrCat(path, ": expected a map (", type, ")"));
    return;
  }
  if (type == "map") {
    for (const auto& kv : node) {
      if (!kv.second.IsScalar()) {
        problems->push_back(absl::StrCat(path, ".", kv.first.as<std::string>(), ": not a scalar"));
      }
    }
    return;
  }
  const auto& fields = Schema().at(type);
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    auto field = fields.find(key);
    if (field == fields.end()) {
      problems->push_back(absl::StrCat(path, ".", key, ": not a field of ", type));
      continue;
    }
    Check(kv.second, field->second, absl::StrCat(path, ".", key), problems);
  }
}

std::vector<std::string> Validate(const std::string& text) {
  std::vector<std::string> problems;
  for (const YAML::Node& doc : YAML::LoadAll(text)) {
    const std::string kind = doc["kind"].as<std::string>();
    Check(doc, kind, kind, &problems);
  }
  return problems;
}

std::string Root() { return FLEET_SOURCE_DIR; }

Recipe Load(const std::string& name) {
  absl::StatusOr<Recipe> recipe = LoadRecipe(absl::StrCat(Root(), "/recipes/", name));
  EXPECT_TRUE(recipe.ok()) << recipe.status();
  recipe->path = absl::StrCat("recipes/", name);
  return *recipe;
}

ExportOptions Sparks(const std::string& group) {
  ExportOptions options;
  options.group = group;
  options.fabric_interface = "enp1s0f1np1";
  options.rdma_devices = {"rocep1s0f1", "roceP2p1s0f1"};
  return options;
}

TEST(ExportLws, FollowsTheApiTypesAndRunsEveryRank) {
  absl::StatusOr<Export> out =
      ExportLeaderWorkerSet(Load("deepseek-v4-flash-4x.yaml"), Sparks("ds4"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(Validate(out->text), ::testing::IsEmpty());
  std::vector<YAML::Node> docs = YAML::LoadAll(out->text);
  ASSERT_EQ(docs.size(), 2u);
  const YAML::Node spec = docs[0]["spec"];
  EXPECT_EQ(docs[0]["apiVersion"].as<std::string>(), "leaderworkerset.x-k8s.io/v1");
  EXPECT_EQ(spec["leaderWorkerTemplate"]["size"].as<int>(), 4);
  EXPECT_EQ(spec["leaderWorkerTemplate"]["restartPolicy"].as<std::string>(),
            "RecreateGroupOnPodRestart");
  EXPECT_EQ(spec["rolloutStrategy"]["rollingUpdateConfiguration"]["maxUnavailable"].as<int>(), 1);
  const YAML::Node leader = spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"];
  const YAML::Node worker = spec["leaderWorkerTemplate"]["workerTemplate"]["spec"];
  EXPECT_EQ(leader["containers"][0]["readinessProbe"]["httpGet"]["path"].as<std::string>(),
            "/health");
  EXPECT_FALSE(worker["containers"][0]["readinessProbe"]);
  const std::string worker_command =
      absl::StrJoin(worker["containers"][0]["command"].as<std::vector<std::string>>(), " ");
  EXPECT_THAT(worker_command, HasSubstr("--node-rank $(LWS_WORKER_INDEX)"));
  EXPECT_THAT(worker_command, HasSubstr("--master-addr $(LWS_LEADER_ADDRESS)"));
  // Workers wait for the head's master port, as SparkFleet's head-first launch does.
  EXPECT_THAT(worker["initContainers"][0]["command"][2].as<std::string>(),
              HasSubstr("nc -z -w 2 \"$LWS_LEADER_ADDRESS\" 29500"));
  for (const YAML::Node& pod : {leader, worker}) {
    const YAML::Node c = pod["containers"][0];
    EXPECT_EQ(c["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 1);
    EXPECT_EQ(c["securityContext"]["capabilities"]["add"][0].as<std::string>(), "IPC_LOCK");
    EXPECT_EQ(pod["volumes"][0]["emptyDir"]["medium"].as<std::string>(), "Memory");
    EXPECT_TRUE(pod["hostNetwork"].as<bool>());
  }
  EXPECT_EQ(docs[1]["kind"].as<std::string>(), "Service");
  EXPECT_EQ(
      docs[1]["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"].as<std::string>(),
      "0");
}

TEST(ExportLws, TheValidatorCatchesAMisspeltField) {
  absl::StatusOr<Export> out =
      ExportLeaderWorkerSet(Load("deepseek-v4-flash-2x.yaml"), Sparks("ds4"));
  ASSERT_TRUE(out.ok()) << out.status();
  std::string bad = out->text;
  bad.replace(bad.find("restartPolicy:"), 14, "restartPolicyy:");
  EXPECT_THAT(Validate(bad), ::testing::ElementsAre(
                                 HasSubstr("restartPolicyy: not a field of LeaderWorkerTemplate")));
}

TEST(ExportLws, DevicePluginAsksForTheRdmaResourceOffTheHostNetwork) {
  ExportOptions options = Sparks("ds4");
  options.rdma = RdmaAccess::kDevicePlugin;
  absl::StatusOr<Export> out = ExportLeaderWorkerSet(Load("deepseek-v4-flash-2x.yaml"), options);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(Validate(out->text), ::testing::IsEmpty());
  const YAML::Node pod =
      YAML::LoadAll(out->text)[0]["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"];
  EXPECT_FALSE(pod["hostNetwork"]);
  EXPECT_EQ(pod["containers"][0]["resources"]["limits"]["rdma/rdma_shared_device_a"].as<int>(), 1);
}

TEST(ExportLws, ProcessRuntimeNeedsAnImage) {
  ExportOptions options;
  options.group = "demo";
  options.nodes = 1;
  absl::StatusOr<Export> out = ExportLeaderWorkerSet(Load("local-demo.yaml"), options);
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("pass --image IMAGE"));
}

TEST(ExportLws, PlacementByNodeNameIsANote) {
  Recipe recipe = Load("deepseek-v4-flash-2x.yaml");
  recipe.placement = {"spark-1", "spark-2"};
  absl::StatusOr<Export> out = ExportLeaderWorkerSet(recipe, Sparks("ds4"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->notes,
              ::testing::Contains(HasSubstr("placement [spark-1, spark-2] is not exported")));
  EXPECT_THAT(out->text, HasSubstr("# note: placement [spark-1, spark-2]"));
}

TEST(ExportSlurm, NativeGroupsOfSeveralRanksAreRefused) {
  ExportOptions options;
  options.group = "demo";
  absl::StatusOr<Export> out = ExportSlurm(Load("local-demo.yaml"), options);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(out.status().message(), HasSubstr("export it with --nodes 1"));
}

TEST(ExportSlurm, OneTaskPerNodeRankFromNodeIdWorkersAfterTheHead) {
  Recipe recipe = Load("deepseek-v4-flash-2x.yaml");
  recipe.placement = {"spark-2", "spark-1"};
  absl::StatusOr<Export> out = ExportSlurm(recipe, Sparks("ds4"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->text, HasSubstr("#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n"));
  EXPECT_THAT(out->text, HasSubstr("#SBATCH --nodelist=spark-2,spark-1\n"));
  EXPECT_THAT(out->text, HasSubstr("local rank=$SLURM_NODEID"));
  EXPECT_THAT(out->text, HasSubstr("until (exec 3<>\"/dev/tcp/${FLEET_HEAD_ADDR}/29500\")"));
  EXPECT_THAT(out->text, HasSubstr("--kill-on-bad-exit=1"));
  EXPECT_THAT(out->text, HasSubstr("\"--node-rank\" \"1\""));
  EXPECT_THAT(out->text, HasSubstr("\"docker\" \"run\" \"--rm\""));
  EXPECT_THAT(out->text, ::testing::Not(HasSubstr("--detach")));
  EXPECT_THAT(out->notes, ::testing::Contains(HasSubstr("not necessarily spark-2")));
}

TEST(YamlWriter, QuotesEveryStringSoNumbersStayStrings) {
  OrderedJson doc = {{"a", "1"}, {"b", 2}, {"c", OrderedJson::array({{{"x", true}, {"y", "z"}}})}};
  EXPECT_EQ(WriteYaml(doc), "a: \"1\"\nb: 2\nc:\n  - x: true\n    y: \"z\"\n");
  EXPECT_EQ(YAML::Load(WriteYaml(doc))["c"][0]["y"].as<std::string>(), "z");
}

// Golden exports: compared with tests/fixtures/golden/export/NAME. Run the test with
// FLEET_UPDATE_GOLDEN=1 to rewrite the files, then read the diff.
struct GoldenCase {
  std::string golden;
  std::string recipe;
  bool lws;
  std::optional<int> nodes;
};

class ExportGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(ExportGolden, MatchesTheGoldenFile) {
  ExportOptions options = Sparks(GetParam().golden.substr(0, GetParam().golden.find('.')));
  options.nodes = GetParam().nodes;
  if (GetParam().recipe == "local-demo.yaml") {
    options = ExportOptions{.group = "local-demo",
                            .nodes = 1,
                            .gpus_per_node = 0,
                            .image = "sparkfleet/fleet-engine:0.1.0"};
  }
  Recipe recipe = Load(GetParam().recipe);
  absl::StatusOr<Export> out =
      GetParam().lws ? ExportLeaderWorkerSet(recipe, options) : ExportSlurm(recipe, options);
  ASSERT_TRUE(out.ok()) << out.status();
  if (GetParam().lws) {
    EXPECT_THAT(Validate(out->text), ::testing::IsEmpty());
  }
  const std::string path =
      absl::StrCat(Root(), "/tests/fixtures/golden/export/", GetParam().golden);
  if (std::getenv("FLEET_UPDATE_GOLDEN") != nullptr) {
    ASSERT_TRUE(WriteFileAtomically(path, out->text).ok());
  }
  absl::StatusOr<std::string> expected = ReadFileToString(path);
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(out->text, *expected) << "export differs from " << path;
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, ExportGolden,
    ::testing::Values(GoldenCase{"ds4-2x.lws.yaml", "deepseek-v4-flash-2x.yaml", true, {}},
                      GoldenCase{"ds4-4x.lws.yaml", "deepseek-v4-flash-4x.yaml", true, {}},
                      GoldenCase{"ds4-2x.slurm.sh", "deepseek-v4-flash-2x.yaml", false, {}},
                      GoldenCase{"local-demo.lws.yaml", "local-demo.yaml", true, {}},
                      GoldenCase{"local-demo.slurm.sh", "local-demo.yaml", false, {}}),
    [](const auto& info) {
      std::string name = info.param.golden;
      for (char& c : name) {
        if (!absl::ascii_isalnum(c)) c = '_';
      }
      return name;
    });

}  // namespace
}  // namespace fleet::engine
