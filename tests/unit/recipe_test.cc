// Recipe parsing, PyYAML-compatible value printing, str.format rendering and word splitting,
// on the community's own files and on small inline recipes for every error.
#include "launch/recipe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/files.h"

namespace fleet::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

using Values = std::vector<std::pair<std::string, std::string>>;

std::string SourcePath(absl::string_view relative) {
  return absl::StrCat(FLEET_SOURCE_DIR, "/", relative);
}

// The error message of parsing `yaml` as x.yaml, or "OK" when it parses.
std::string ParseError(absl::string_view yaml) {
  absl::StatusOr<Recipe> recipe = ParseRecipe("x.yaml", yaml);
  if (recipe.ok()) return "OK";
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(recipe.status().message());
}

Recipe MustParse(absl::string_view yaml) {
  absl::StatusOr<Recipe> recipe = ParseRecipe("x.yaml", yaml);
  EXPECT_TRUE(recipe.ok()) << recipe.status();
  return recipe.ok() ? *std::move(recipe) : Recipe{};
}

// Lines 1-3 of a version-1 recipe; tests append from line 4.
constexpr absl::string_view kV1 = "recipe_version: \"1\"\nname: demo\ncontainer: img\n";
// Lines 1-2 of a version-2 recipe; tests append from line 3.
constexpr absl::string_view kV2 = "recipe_version: \"2\"\nname: demo\n";

std::string RenderWithDefaults(const Recipe& recipe) {
  absl::StatusOr<Values> values = EffectiveValues(recipe, {});
  EXPECT_TRUE(values.ok()) << values.status();
  if (!values.ok()) return "";
  absl::StatusOr<std::string> command = RenderCommand(recipe, *values);
  EXPECT_TRUE(command.ok()) << command.status();
  return command.ok() ? *command : "";
}

// ---------------------------------------------------------------------------------------------
// The community's recipes, copied verbatim from eugr/spark-vllm-docker.

class CommunityRecipeTest : public ::testing::TestWithParam<std::string> {};

// The golden files hold what run-recipe.py produces from the same file: for NAME.yaml,
// golden/NAME.txt is yaml.safe_load(f)["command"].format(**defaults) and golden/NAME.values.txt
// lists str() of every defaults and env value, both written by python3 with PyYAML 6.0.
TEST_P(CommunityRecipeTest, LoadsAndRendersExactlyAsRunRecipe) {
  const std::string name = GetParam();
  absl::StatusOr<Recipe> recipe =
      LoadRecipe(SourcePath(absl::StrCat("tests/fixtures/recipes/", name, ".yaml")));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->version, 1);
  EXPECT_EQ(recipe->runtime, RuntimeKind::kDocker);
  EXPECT_FALSE(recipe->name.empty());
  EXPECT_FALSE(recipe->container.empty());

  absl::StatusOr<std::string> golden =
      ReadFileToString(SourcePath(absl::StrCat("tests/fixtures/recipes/golden/", name, ".txt")));
  ASSERT_TRUE(golden.ok()) << golden.status();
  EXPECT_EQ(RenderWithDefaults(*recipe), *golden);

  absl::StatusOr<std::string> golden_values = ReadFileToString(
      SourcePath(absl::StrCat("tests/fixtures/recipes/golden/", name, ".values.txt")));
  ASSERT_TRUE(golden_values.ok()) << golden_values.status();
  std::string values;
  for (const auto& [key, value] : recipe->defaults)
    absl::StrAppend(&values, "defaults.", key, "=", value, "\n");
  for (const auto& [key, value] : recipe->env)
    absl::StrAppend(&values, "env.", key, "=", value, "\n");
  EXPECT_EQ(values, *golden_values);

  absl::StatusOr<std::vector<std::string>> argv = SplitCommand(*golden);
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_EQ((*argv)[0], "vllm");
  EXPECT_EQ((*argv)[1], "serve");

  // Every defaults key has a location; each sits on a line of its own below "defaults:".
  for (const auto& [key, value] : recipe->defaults) {
    EXPECT_GT(recipe->locations[absl::StrCat("defaults.", key)].line,
              recipe->locations["defaults"].line)
        << key;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CommunityRecipeTest,
                         ::testing::Values("deepseek-v4-flash", "deepseek-v4.1-flash-4x",
                                           "nemotron-3-nano-nvfp4",
                                           "gemma4-26b-a4b-fp8-speculative", "glm-4.7-flash-awq",
                                           "diffusion-gemma-bf16-thinking",
                                           "gemma4-26b-a4b-nvfp4-solo"));

TEST(RecipeErrors, TextThatIsNotUtf8IsRefusedWithItsLineAndColumn) {
  absl::StatusOr<Recipe> recipe =
      ParseRecipe("bad.yaml", "recipe_version: 1\nname: caf\xe9\ncommand: x\n");
  ASSERT_FALSE(recipe.ok());
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(recipe.status().message()),
              ::testing::StartsWith("bad.yaml:2:10: the file is not valid UTF-8 (byte 0xE9)"));
  // Overlong forms, surrogates and truncated sequences are refused too; real UTF-8 passes.
  EXPECT_FALSE(CheckUtf8("x", "\xc0\xaf").ok());
  EXPECT_FALSE(CheckUtf8("x", "\xed\xa0\x80").ok());
  EXPECT_FALSE(CheckUtf8("x", "ok \xe2\x82").ok());
  EXPECT_TRUE(CheckUtf8("x", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80").ok());
  EXPECT_FALSE(ParseOverride("name=\xff").ok());
}

constexpr char kV2Head[] = "recipe_version: 2\nname: r\ncommand: serve\n";

TEST(RecipeRuntime, UlimitsForEitherRuntimeWithMemlockKeptAsTheRequirement) {
  absl::StatusOr<Recipe> recipe = ParseRecipe(
      "r.yaml", absl::StrCat(kV2Head,
                             "runtime:\n  type: process\n  ulimits:\n    stack: 67108864\n"
                             "    nofile: {soft: 65536, hard: 1048576}\n    memlock: unlimited\n"));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->runtime, RuntimeKind::kProcess);
  ASSERT_EQ(recipe->ulimits.size(), 3u);
  EXPECT_EQ(recipe->ulimits[0].name, "stack");
  EXPECT_EQ(recipe->ulimits[0].soft, 67108864u);
  EXPECT_EQ(recipe->ulimits[0].hard, 67108864u);
  EXPECT_EQ(recipe->ulimits[1].soft, 65536u);
  EXPECT_EQ(recipe->ulimits[1].hard, 1048576u);
  EXPECT_EQ(recipe->requirements.memlock_bytes, std::numeric_limits<uint64_t>::max());
  // The plain form still works.
  absl::StatusOr<Recipe> plain = ParseRecipe("r.yaml", absl::StrCat(kV2Head, "runtime: process\n"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->ulimits.empty());
}

TEST(RecipeRuntime, BadUlimitsNameTheirLineAndTheFix) {
  struct Case {
    std::string yaml;
    std::string error;
  } cases[] = {
      {"runtime:\n  type: docker\n  ulimits: {stak: 1}\n",
       "r.yaml:6:13: unknown limit "
       "\"runtime.ulimits.stak\"; did you "
       "mean \"stack\"?"},
      {"runtime:\n  ulimits: {stack: 1}\n", "needs \"type\""},
      {"runtime:\n  type: process\n  ulimits: {nofile: {soft: 10, hard: 5}}\n",
       "soft is above hard"},
      {"runtime:\n  type: process\n  ulimits: {stack: big}\n", "or \"unlimited\", found \"big\""},
      {"requires: {memlock: 1g}\nruntime:\n  type: process\n  ulimits: {memlock: 2048}\n",
       "differs from \"requires.memlock\""},
      {"runtime:\n  type: process\n  ulimits: {memlock: 2048}\nrequires: {memlock: 1g}\n",
       "also set by \"runtime.ulimits.memlock\""},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Recipe> recipe = ParseRecipe("r.yaml", absl::StrCat(kV2Head, c.yaml));
    ASSERT_FALSE(recipe.ok()) << c.yaml;
    EXPECT_THAT(std::string(recipe.status().message()), ::testing::HasSubstr(c.error)) << c.yaml;
  }
}

TEST(CommunityRecipe, DeepSeekV4FlashFields) {
  absl::StatusOr<Recipe> recipe =
      LoadRecipe(SourcePath("tests/fixtures/recipes/deepseek-v4-flash.yaml"));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->name, "DeepSeek-V4-Flash");
  EXPECT_EQ(recipe->model, "deepseek-ai/DeepSeek-V4-Flash");
  EXPECT_EQ(recipe->container, "vllm-node-dsv4");
  EXPECT_TRUE(recipe->cluster_only);
  EXPECT_FALSE(recipe->solo_only);
  EXPECT_TRUE(recipe->mods.empty());
  EXPECT_EQ(recipe->build_args.size(), 8u);
  EXPECT_EQ(recipe->build_args[1], "https://github.com/jasl/vllm.git");
  EXPECT_EQ(recipe->locations["cluster_only"].line, 12);
  EXPECT_EQ(recipe->locations["defaults.max_num_seqs"].line, 34);
  EXPECT_EQ(recipe->locations["defaults.max_num_seqs"].column, 3);
  EXPECT_EQ(recipe->locations["command"].line, 56);
  EXPECT_EQ(Where(*recipe, "defaults.tensor_parallel"), absl::StrCat(recipe->path, ":29:3: "));
  EXPECT_EQ(GroupSize(*recipe, recipe->defaults).value_or(-1), 2);
}

TEST(CommunityRecipe, SoloOnlyWithModsAndFoldedDescription) {
  absl::StatusOr<Recipe> nemotron =
      LoadRecipe(SourcePath("tests/fixtures/recipes/nemotron-3-nano-nvfp4.yaml"));
  ASSERT_TRUE(nemotron.ok()) << nemotron.status();
  EXPECT_TRUE(nemotron->solo_only);
  EXPECT_THAT(nemotron->mods, ElementsAre("mods/fix-nemotron-nano"));
  EXPECT_EQ(GroupSize(*nemotron, nemotron->defaults).value_or(-1), 1);

  absl::StatusOr<Recipe> gemma =
      LoadRecipe(SourcePath("tests/fixtures/recipes/gemma4-26b-a4b-nvfp4-solo.yaml"));
  ASSERT_TRUE(gemma.ok()) << gemma.status();
  EXPECT_EQ(gemma->description,
            "Single DGX Spark deployment of Gemma 4 26B-A4B using NVFP4 and Marlin MoE backend. "
            "Provides ~52 tok/s on GB10.\n");
  EXPECT_EQ(gemma->container, "vllm/vllm-openai:gemma4-cu130");

  // `env:` followed only by a comment is null, which run-recipe.py treats as no variables.
  absl::StatusOr<Recipe> glm =
      LoadRecipe(SourcePath("tests/fixtures/recipes/glm-4.7-flash-awq.yaml"));
  ASSERT_TRUE(glm.ok()) << glm.status();
  EXPECT_TRUE(glm->env.empty());
  EXPECT_THAT(glm->build_args, ElementsAre("--pre-tf"));
}

TEST(CommunityRecipe, JsonWithPlaceholdersInsideDoubledBraces) {
  absl::StatusOr<Recipe> recipe =
      LoadRecipe(SourcePath("tests/fixtures/recipes/deepseek-v4.1-flash-4x.yaml"));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  absl::StatusOr<Values> values =
      EffectiveValues(*recipe, {{"num_speculative_tokens", "3"}, {"max_model_len", "131072"}});
  ASSERT_TRUE(values.ok()) << values.status();
  absl::StatusOr<std::string> command = RenderCommand(*recipe, *values);
  ASSERT_TRUE(command.ok()) << command.status();
  absl::StatusOr<std::vector<std::string>> argv = SplitCommand(*command);
  ASSERT_TRUE(argv.ok()) << argv.status();
  auto spec = std::find(argv->begin(), argv->end(), "--speculative-config");
  ASSERT_NE(spec, argv->end());
  EXPECT_EQ(*(spec + 1),
            "{\"method\":\"dspark\",\"num_speculative_tokens\":3,\"draft_tensor_parallel_size\":"
            "4,\"attention_backend\":\"B12X\",\"draft_sample_method\":\"probabilistic\","
            "\"rejection_sample_method\":\"standard\",\"enable_adaptive_verification\":true}");
  auto len = std::find(argv->begin(), argv->end(), "--max-model-len");
  ASSERT_NE(len, argv->end());
  EXPECT_EQ(*(len + 1), "131072");
  EXPECT_EQ(GroupSize(*recipe, *values).value_or(-1), 4);
}

// ---------------------------------------------------------------------------------------------
// The repository's recipes.

TEST(RepoRecipes, DeepSeekV4Flash2x) {
  absl::StatusOr<Recipe> recipe = LoadRecipe(SourcePath("recipes/deepseek-v4-flash-2x.yaml"));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->version, 2);
  EXPECT_EQ(recipe->engine, "vllm");
  EXPECT_EQ(recipe->runtime, RuntimeKind::kDocker);
  EXPECT_TRUE(recipe->cluster_only);
  // Two-Spark groups ran on NCCL 2.28: the recipe asks for no minimum.
  EXPECT_EQ(recipe->requirements.nccl, "");
  EXPECT_EQ(recipe->requirements.memlock_bytes, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(recipe->requirements.shm_bytes, uint64_t{64} << 30);
  EXPECT_EQ(recipe->requirements.mtu, 9000u);
  EXPECT_EQ(recipe->requirements.gpu_arch, "sm_121");
  ASSERT_EQ(recipe->mounts.size(), 1u);
  EXPECT_EQ(recipe->mounts[0].source, "~/.cache/huggingface");
  EXPECT_EQ(recipe->mounts[0].target, "/root/.cache/huggingface");
  EXPECT_FALSE(recipe->mounts[0].read_only);
  EXPECT_THAT(recipe->cache_dirs, ElementsAre("/root/.cache/vllm", "/root/.cache/flashinfer",
                                              "/root/.triton", "/tmp/torchinductor_root"));
  EXPECT_EQ(recipe->health.start_timeout, absl::Minutes(60));
  EXPECT_EQ(recipe->health.request_timeout, absl::Seconds(10));
  EXPECT_FALSE(recipe->health.port.has_value());
  EXPECT_EQ(GroupSize(*recipe, recipe->defaults).value_or(-1), 2);

  std::string command = RenderWithDefaults(*recipe);
  absl::StatusOr<std::vector<std::string>> argv = SplitCommand(command);
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_THAT(*argv, ::testing::Contains("--enable-expert-parallel"));
  EXPECT_THAT(*argv, ::testing::Not(::testing::Contains("--distributed-executor-backend")));
  auto spec = std::find(argv->begin(), argv->end(), "--speculative-config");
  ASSERT_NE(spec, argv->end());
  EXPECT_EQ(*(spec + 1), "{\"method\":\"mtp\",\"num_speculative_tokens\":2}");
  EXPECT_THAT(command, HasSubstr("--tensor-parallel-size 2 \\\n"));
  EXPECT_THAT(command, HasSubstr("--kv-cache-dtype fp8 \\\n"));
  EXPECT_THAT(command, HasSubstr("--block-size 256 \\\n"));
  EXPECT_THAT(command, HasSubstr("--max-num-seqs 2 \\\n"));
  EXPECT_THAT(command, HasSubstr("--max-model-len 200000 \\\n"));
}

TEST(RepoRecipes, DeepSeekV4Flash4x) {
  absl::StatusOr<Recipe> recipe = LoadRecipe(SourcePath("recipes/deepseek-v4-flash-4x.yaml"));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->requirements.nccl, ">=2.30.4");
  EXPECT_EQ(GroupSize(*recipe, recipe->defaults).value_or(-1), 4);
  std::string command = RenderWithDefaults(*recipe);
  EXPECT_THAT(command, HasSubstr("--tensor-parallel-size 4 \\\n"));
  EXPECT_THAT(command, HasSubstr("--max-num-seqs 8 \\\n"));
  EXPECT_THAT(command, HasSubstr("--enable-expert-parallel \\\n"));
  EXPECT_THAT(
      command,
      HasSubstr("--speculative-config '{\"method\":\"mtp\",\"num_speculative_tokens\":2}'"));
  EXPECT_TRUE(SplitCommand(command).ok());
}

TEST(RepoRecipes, LocalDemo) {
  absl::StatusOr<Recipe> recipe = LoadRecipe(SourcePath("recipes/local-demo.yaml"));
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->engine, "native");
  EXPECT_EQ(recipe->runtime, RuntimeKind::kProcess);
  EXPECT_TRUE(recipe->container.empty());
  EXPECT_EQ(recipe->nodes, 2);
  EXPECT_FALSE(recipe->health.port.has_value());
  EXPECT_EQ(GroupSize(*recipe, recipe->defaults).value_or(-1), 2);
  absl::StatusOr<Values> values = EffectiveValues(*recipe, {{"port", "9000"}});
  ASSERT_TRUE(values.ok()) << values.status();
  absl::StatusOr<std::string> command = RenderCommand(*recipe, *values);
  ASSERT_TRUE(command.ok()) << command.status();
  // The folded command is one line; -o port moves fleet-engine's HTTP port.
  std::vector<std::string> words = SplitCommand(*command).value_or(std::vector<std::string>{});
  ASSERT_GE(words.size(), 6u);
  EXPECT_THAT(std::vector<std::string>(words.begin(), words.begin() + 6),
              ElementsAre("fleet-engine", "serve", "--device", "cpu", "--port", "9000"));
}

TEST(LoadRecipe, MissingFileIsNotFoundNamingThePath) {
  absl::StatusOr<Recipe> recipe = LoadRecipe("/nonexistent/r.yaml");
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(recipe.status().message()), HasSubstr("/nonexistent/r.yaml"));
}

// ---------------------------------------------------------------------------------------------
// Values printed as PyYAML 6 loads them and Python's str() prints them. The expected column was
// produced by str(yaml.safe_load("k: " + text)["k"]).

struct PrintCase {
  std::string yaml;
  std::string python;
};

class PyYamlPrintingTest : public ::testing::TestWithParam<PrintCase> {};

TEST_P(PyYamlPrintingTest, DefaultsPrintAsPython) {
  Recipe recipe =
      MustParse(absl::StrCat(kV1, "command: run {k}\ndefaults:\n  k: ", GetParam().yaml, "\n"));
  ASSERT_EQ(recipe.defaults.size(), 1u);
  EXPECT_EQ(recipe.defaults[0].second, GetParam().python) << GetParam().yaml;
}

INSTANTIATE_TEST_SUITE_P(
    Scalars, PyYamlPrintingTest,
    ::testing::Values(
        // YAML 1.1 booleans, which YAML 1.2 parsers would keep as text.
        PrintCase{"true", "True"}, PrintCase{"TRUE", "True"}, PrintCase{"yes", "True"},
        PrintCase{"Yes", "True"}, PrintCase{"no", "False"}, PrintCase{"on", "True"},
        PrintCase{"Off", "False"}, PrintCase{"y", "y"}, PrintCase{"n", "n"},
        // Nulls.
        PrintCase{"~", "None"}, PrintCase{"null", "None"}, PrintCase{"", "None"},
        // Floats: Python's shortest repr, fixed while the exponent is in [-4, 16).
        PrintCase{"0.85", "0.85"}, PrintCase{"0.90", "0.9"}, PrintCase{"1.0", "1.0"},
        PrintCase{"1.", "1.0"}, PrintCase{"-0.0", "-0.0"}, PrintCase{".5", "0.5"},
        PrintCase{"0.1", "0.1"}, PrintCase{"100.0", "100.0"},
        PrintCase{"3.14159265358979", "3.14159265358979"}, PrintCase{"1.0e+3", "1000.0"},
        PrintCase{"2.5e+2", "250.0"}, PrintCase{"1.5e-7", "1.5e-07"},
        PrintCase{"6.02e+23", "6.02e+23"}, PrintCase{"1.0e+16", "1e+16"},
        PrintCase{"1.0e+15", "1000000000000000.0"}, PrintCase{"0.0001", "0.0001"},
        PrintCase{"0.00001", "1e-05"}, PrintCase{"1_0.5", "10.5"}, PrintCase{"1:30.5", "90.5"},
        PrintCase{".inf", "inf"}, PrintCase{"-.inf", "-inf"}, PrintCase{".nan", "nan"},
        // PyYAML's float needs a dot: these stay text.
        PrintCase{"1e3", "1e3"}, PrintCase{"1e16", "1e16"},
        // Integers in every YAML 1.1 base.
        PrintCase{"8000", "8000"}, PrintCase{"-12", "-12"}, PrintCase{"+5", "5"},
        PrintCase{"-0", "0"}, PrintCase{"1_000", "1000"}, PrintCase{"0x10", "16"},
        PrintCase{"0x_1F", "31"}, PrintCase{"0755", "493"}, PrintCase{"0b101", "5"},
        PrintCase{"1:30", "90"},
        PrintCase{"123456789012345678901234567890", "123456789012345678901234567890"},
        PrintCase{"0o17", "0o17"}, PrintCase{"09", "09"},
        // Text, including what merely looks numeric; quoted and block scalars are never typed.
        PrintCase{"auto", "auto"}, PrintCase{"0.0.0.0", "0.0.0.0"}, PrintCase{"12.1a", "12.1a"},
        PrintCase{"2026-07-01", "2026-07-01"}, PrintCase{"\"true\"", "true"},
        PrintCase{"'yes'", "yes"}, PrintCase{"\"0.90\"", "0.90"}, PrintCase{"'~'", "~"},
        PrintCase{"!!str 5", "5"}, PrintCase{"|\n    two words", "two words\n"},
        PrintCase{"'{\"a\": 1}'", "{\"a\": 1}"}));

TEST(PyYamlPrinting, EnvPrintsAsRunRecipeExportsIt) {
  // run-recipe.py writes f'export {key}="{value}"', so env values are str() of the value too.
  Recipe recipe = MustParse(absl::StrCat(
      kV1, "command: run\nenv:\n  A: 1\n  B: true\n  C: \"x y\"\n  D: 0.50\n  E: off\n"));
  EXPECT_THAT(recipe.env, ElementsAre(Pair("A", "1"), Pair("B", "True"), Pair("C", "x y"),
                                      Pair("D", "0.5"), Pair("E", "False")));
}

TEST(PyYamlPrinting, ValuesPyYamlCannotLoadAreErrors) {
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefaults:\n  t: 2026-07-01 12:00:00\n")),
            "x.yaml:6:6: \"2026-07-01 12:00:00\" is a YAML timestamp, which Python would print "
            "differently; quote it");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefaults:\n  t: =\n")),
            "x.yaml:6:6: a bare = cannot be loaded by PyYAML; quote it");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefaults:\n  t: 0x1000000000000000000\n")),
            "x.yaml:6:6: \"0x1000000000000000000\": integer is too large; quote it");
}

// ---------------------------------------------------------------------------------------------
// Errors: every one starts with PATH:LINE:COL and says what was expected and found.

TEST(ParseErrors, BadYaml) {
  EXPECT_EQ(ParseError("recipe_version: \"1\"\nmods: [a\nname: b\n"),
            "x.yaml:3:5: bad YAML: end of sequence flow not found");
  EXPECT_EQ(ParseError("name: a: b\n"), "x.yaml:1:8: bad YAML: illegal map value");
}

TEST(ParseErrors, DocumentShape) {
  EXPECT_EQ(ParseError(""),
            "x.yaml:1:1: expected a map of recipe keys (recipe_version, name, container, "
            "command, ...), found an empty document");
  EXPECT_EQ(ParseError("# only a comment\n- a\n- b\n"),
            "x.yaml:2:1: expected a map of recipe keys (recipe_version, name, container, "
            "command, ...), found a list");
}

TEST(ParseErrors, UnknownKeySuggestsTheClosest) {
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefualts:\n  port: 1\n")),
            "x.yaml:5:1: unknown key \"defualts\"; did you mean \"defaults\"?");
  EXPECT_THAT(ParseError(absl::StrCat(kV1, "command: run\nzzzzzzzzzzzz: 1\n")),
              ::testing::StartsWith("x.yaml:5:1: unknown key \"zzzzzzzzzzzz\"; known: "
                                    "recipe_version, name,"));
}

TEST(ParseErrors, VersionTwoKeyInVersionOneFile) {
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\nengine: vllm\n")),
            "x.yaml:5:1: \"engine\" is a version-2 key; set recipe_version: \"2\" to use it");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\nhealth:\n  path: /h\n")),
            "x.yaml:5:1: \"health\" is a version-2 key; set recipe_version: \"2\" to use it");
}

TEST(ParseErrors, RecipeVersion) {
  EXPECT_EQ(ParseError("name: demo\ncontainer: img\ncommand: run\n"),
            "x.yaml:1:1: missing required key \"recipe_version\"; add recipe_version: \"1\" (the "
            "community format) or \"2\"");
  EXPECT_EQ(ParseError("recipe_version: \"3\"\nname: demo\ncontainer: img\ncommand: run\n"),
            "x.yaml:1:17: \"recipe_version\" must be \"1\" or \"2\", found \"3\"");
  EXPECT_EQ(ParseError("recipe_version: 1.0\nname: demo\ncontainer: img\ncommand: run\n"),
            "x.yaml:1:17: \"recipe_version\" must be \"1\" or \"2\", found \"1.0\"");
  EXPECT_EQ(MustParse("recipe_version: 1\nname: demo\ncontainer: img\ncommand: run\n").version, 1);
  EXPECT_EQ(MustParse("recipe_version: 2\nname: demo\ncommand: run\n").version, 2);
}

TEST(ParseErrors, MissingRequiredKeysPointAtTheDocument) {
  EXPECT_EQ(ParseError("# comment\nrecipe_version: \"1\"\nname: demo\ncontainer: img\n"),
            "x.yaml:2:1: missing required key \"command\" (the program and its arguments, with "
            "{placeholders})");
  EXPECT_EQ(ParseError("recipe_version: \"1\"\ncontainer: img\ncommand: run\n"),
            "x.yaml:1:1: missing required key \"name\"");
  EXPECT_EQ(ParseError("recipe_version: \"1\"\nname: demo\ncommand: run\n"),
            "x.yaml:1:1: missing required key \"container\" (the image the command runs in)");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command:\n")),
            "x.yaml:4:1: \"command\" must be a non-empty string, found nothing");
}

TEST(ParseErrors, WrongTypes) {
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nnodes: two\n")),
            "x.yaml:4:8: \"nodes\" must be an integer >= 1, found \"two\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nnodes: 0\n")),
            "x.yaml:4:8: \"nodes\" must be an integer >= 1, found \"0\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nreplicas: \"2\"\n")),
            "x.yaml:4:11: \"replicas\" must be an integer >= 1, found \"2\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ncluster_only: maybe\n")),
            "x.yaml:5:15: \"cluster_only\" must be true or false, found \"maybe\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\nmods: mods/fix\n")),
            "x.yaml:5:7: \"mods\" must be a list of strings, found \"mods/fix\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: [a, b]\n")),
            "x.yaml:4:10: \"command\" must be a non-empty string, found a list");
}

TEST(ParseErrors, DefaultsHoldSingleValues) {
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefaults:\n  ports: [1, 2]\n")),
            "x.yaml:6:10: \"defaults.ports\" must be a single value (a string, number or "
            "boolean), found a list");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\nenv:\n  A:\n    b: 1\n")),
            "x.yaml:7:5: \"env.A\" must be a single value (a string, number or boolean), found "
            "a map");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefaults: 5\n")),
            "x.yaml:5:11: \"defaults\" must be a map of names to values, found \"5\"");
}

TEST(ParseErrors, DuplicateKeys) {
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\nname: again\n")),
            "x.yaml:5:1: key \"name\" is written twice; keep one");
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ndefaults:\n  a: 1\n  a: 2\n")),
            "x.yaml:7:3: \"defaults.a\" is written twice; keep one");
}

TEST(ParseErrors, EngineAndRuntime) {
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nengine: vlm\n")),
            "x.yaml:4:9: unknown engine \"vlm\"; did you mean \"vllm\"? (engines: vllm, exec, "
            "native, llamacpp)");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nruntime: dokcer\ncontainer: i\n")),
            "x.yaml:4:10: \"runtime\" must be docker or process, found \"dokcer\"; did you mean "
            "\"docker\"?");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nruntime: docker\n")),
            "x.yaml:4:10: runtime docker needs \"container\" (the image); set it, or use "
            "runtime: process");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nruntime: process\ncontainer: img\n")),
            "x.yaml:4:10: runtime process runs no image, but \"container\" is set; remove one");
  EXPECT_EQ(MustParse(absl::StrCat(kV2, "command: run\ncontainer: img\n")).runtime,
            RuntimeKind::kDocker);
  EXPECT_EQ(MustParse(absl::StrCat(kV2, "command: run\n")).runtime, RuntimeKind::kProcess);
  EXPECT_EQ(MustParse(absl::StrCat(kV2, "command: run\nengine: native\n")).engine, "native");
}

TEST(ParseErrors, ClusterOnlyAndSoloOnlyExcludeEachOther) {
  EXPECT_EQ(ParseError(absl::StrCat(kV1, "command: run\ncluster_only: true\nsolo_only: yes\n")),
            "x.yaml:6:12: cluster_only and solo_only are both true; a recipe can be only one");
}

TEST(ParseErrors, Placement) {
  Recipe recipe = MustParse(absl::StrCat(kV2, "command: run\nplacement: [spark-1, spark-2]\n"));
  EXPECT_THAT(recipe.placement, ElementsAre("spark-1", "spark-2"));
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nplacement:\n  nodes: [a]\n")),
            "x.yaml:5:3: \"placement\" is a list of node names, head first, e.g. placement: "
            "[spark-1, spark-2]; found a map");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nplacement:\n  - a\n  - a\n")),
            "x.yaml:6:5: node \"a\" is listed twice in \"placement\"");
}

TEST(ParseErrors, Requires) {
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  ncl: \">=2.30.4\"\n")),
            "x.yaml:5:3: unknown key \"requires.ncl\"; did you mean \"nccl\"?");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  nccl: \"2.30.4\"\n")),
            "x.yaml:5:9: \"requires.nccl\" must be OP VERSION with OP one of >=, >, ==, <=, <, "
            "e.g. \">=2.30.4\", found \"2.30.4\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  gpu_arch: \"121\"\n")),
            "x.yaml:5:13: \"requires.gpu_arch\" must look like \"sm_121\", found \"121\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  mtu: 70000\n")),
            "x.yaml:5:8: \"requires.mtu\" must be an integer from 68 to 65535, found \"70000\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  shm: 16x\n")),
            "x.yaml:5:8: \"requires.shm\": a size must be bytes or a number with k, m, g or t "
            "(powers of 1024), found \"16x\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  memlock: lots\n")),
            "x.yaml:5:12: \"requires.memlock\": a size must be bytes or a number with k, m, g or "
            "t (powers of 1024), found \"lots\" (or \"unlimited\")");
  Recipe recipe = MustParse(absl::StrCat(
      kV2, "command: run\nrequires:\n  nccl: \"== 2.28.9\"\n  memlock: 64m\n  mtu: 1500\n"));
  EXPECT_EQ(recipe.requirements.nccl, "== 2.28.9");
  EXPECT_EQ(recipe.requirements.memlock_bytes, uint64_t{64} << 20);
  EXPECT_EQ(recipe.requirements.mtu, 1500u);
  EXPECT_FALSE(recipe.requirements.shm_bytes.has_value());
}

struct SizeCase {
  std::string text;
  uint64_t bytes;
};

class SizeTest : public ::testing::TestWithParam<SizeCase> {};

TEST_P(SizeTest, PowersOf1024) {
  Recipe recipe = MustParse(absl::StrCat(kV2, "command: run\nrequires:\n  shm: ", GetParam().text,
                                         "\n  min_free_disk: ", GetParam().text, "\n"));
  EXPECT_EQ(recipe.requirements.shm_bytes, GetParam().bytes) << GetParam().text;
  EXPECT_EQ(recipe.requirements.min_free_disk_bytes, GetParam().bytes) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, SizeTest,
    ::testing::Values(SizeCase{"16g", uint64_t{16} << 30}, SizeCase{"16G", uint64_t{16} << 30},
                      SizeCase{"64Gi", uint64_t{64} << 30}, SizeCase{"16gb", uint64_t{16} << 30},
                      SizeCase{"512m", uint64_t{512} << 20}, SizeCase{"8M", uint64_t{8} << 20},
                      SizeCase{"4k", 4096}, SizeCase{"2t", uint64_t{2} << 40},
                      SizeCase{"1.5g", uint64_t{3} << 29}, SizeCase{"1048576", 1048576},
                      SizeCase{"100b", 100}));

TEST(ParseErrors, BadSizes) {
  for (const char* text : {"g", "-1g", "1.5", "16 gigs", "1e3g", "99999999999t"}) {
    EXPECT_THAT(ParseError(absl::StrCat(kV2, "command: run\nrequires:\n  shm: \"", text, "\"\n")),
                ::testing::StartsWith("x.yaml:5:8: \"requires.shm\": "))
        << text;
  }
}

TEST(ParseErrors, Mounts) {
  Recipe recipe = MustParse(absl::StrCat(
      kV2,
      "command: run\nmounts:\n  - /models:/models:ro\n  - source: ~/.cache/huggingface\n"
      "    target: /root/.cache/huggingface\n    read_only: false\n  - /a:/b:rw\n"));
  ASSERT_EQ(recipe.mounts.size(), 3u);
  EXPECT_EQ(recipe.mounts[0].source, "/models");
  EXPECT_TRUE(recipe.mounts[0].read_only);
  EXPECT_EQ(recipe.mounts[1].source, "~/.cache/huggingface");
  EXPECT_EQ(recipe.mounts[1].target, "/root/.cache/huggingface");
  EXPECT_FALSE(recipe.mounts[1].read_only);
  EXPECT_FALSE(recipe.mounts[2].read_only);

  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nmounts:\n  - models:/models\n")),
            "x.yaml:5:5: a mount source must be an absolute path or start with ~/, found "
            "\"models\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nmounts:\n  - /a:/b:rx\n")),
            "x.yaml:5:5: a mount must be \"SOURCE:TARGET\" or \"SOURCE:TARGET:ro\", found "
            "\"/a:/b:rx\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nmounts:\n  - /a:b\n")),
            "x.yaml:5:5: a mount target must be an absolute path, found \"b\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nmounts:\n  - src: /a\n")),
            "x.yaml:5:5: unknown mount key \"src\"; known: source, target, read_only");
}

TEST(ParseErrors, CacheDirs) {
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\ncache_dirs: [/ok, .cache/vllm]\n")),
            "x.yaml:4:19: \"cache_dirs\" holds container paths, which are absolute; found "
            "\".cache/vllm\"");
}

TEST(ParseErrors, Health) {
  Recipe recipe = MustParse(
      absl::StrCat(kV2,
                   "command: run\nhealth:\n  path: /v1/health\n  port: 9000\n  check_models: off\n"
                   "  period: 100ms\n  request_timeout: 2s\n  start_timeout: 1h30m\n"));
  EXPECT_EQ(recipe.health.path, "/v1/health");
  EXPECT_EQ(recipe.health.port, 9000u);
  EXPECT_FALSE(recipe.health.check_models);
  EXPECT_TRUE(recipe.health.check_completion);
  EXPECT_EQ(recipe.health.period, absl::Milliseconds(100));
  EXPECT_EQ(recipe.health.request_timeout, absl::Seconds(2));
  EXPECT_EQ(recipe.health.start_timeout, absl::Minutes(90));
  // Defaults of the header hold when the file says nothing.
  Recipe plain = MustParse(absl::StrCat(kV2, "command: run\n"));
  EXPECT_EQ(plain.health.start_timeout, absl::Minutes(30));
  EXPECT_EQ(plain.health.path, "/health");

  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nhealth:\n  period: 5\n")),
            "x.yaml:5:11: \"health.period\" must be a positive duration such as \"100ms\", "
            "\"2s\" or \"30m\", found \"5\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nhealth:\n  start_timout: 5m\n")),
            "x.yaml:5:3: unknown key \"health.start_timout\"; did you mean \"start_timeout\"?");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nhealth:\n  path: health\n")),
            "x.yaml:5:9: \"health.path\" must start with /, found \"health\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nhealth:\n  port: 0\n")),
            "x.yaml:5:9: \"health.port\" must be an integer from 1 to 65535, found \"0\"");
}

TEST(ParseErrors, HeadWatch) {
  Recipe recipe = MustParse(
      absl::StrCat(kV2,
                   "command: run\nhealth:\n  watch_period: 2s\n  failure_threshold: 5\n"
                   "  stall_timeout: 10m\n  idle_probe_after: 1m\n  idle_probe_timeout: 45s\n"));
  EXPECT_EQ(recipe.health.watch_period, absl::Seconds(2));
  EXPECT_EQ(recipe.health.failure_threshold, 5);
  EXPECT_EQ(recipe.health.stall_timeout, absl::Minutes(10));
  EXPECT_EQ(recipe.health.idle_probe_after, absl::Minutes(1));
  EXPECT_EQ(recipe.health.idle_probe_timeout, absl::Seconds(45));
  // The issue's defaults: /health every 5 s, a stall after 120 s, one token after 30 s idle.
  Recipe plain = MustParse(absl::StrCat(kV2, "command: run\n"));
  EXPECT_EQ(plain.health.watch_period, absl::Seconds(5));
  EXPECT_EQ(plain.health.failure_threshold, 3);
  EXPECT_EQ(plain.health.stall_timeout, absl::Seconds(120));
  EXPECT_EQ(plain.health.idle_probe_after, absl::Seconds(30));
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nhealth:\n  failure_threshold: 0\n")),
            "x.yaml:5:22: \"health.failure_threshold\" must be an integer from 1 to 100, found "
            "\"0\"");
  EXPECT_EQ(ParseError(absl::StrCat(kV2, "command: run\nhealth:\n  watch_period: often\n")),
            "x.yaml:5:17: \"health.watch_period\" must be a positive duration such as \"100ms\", "
            "\"2s\" or \"30m\", found \"often\"");
}

// ---------------------------------------------------------------------------------------------
// Command templates: Python str.format, with errors placed inside the command.

constexpr absl::string_view kBlockCommand =
    "recipe_version: \"1\"\n"                 // 1
    "name: demo\n"                            // 2
    "container: img\n"                        // 3
    "defaults:\n"                             // 4
    "  port: 8000\n"                          // 5
    "command: |\n"                            // 6
    "  vllm serve m \\\n"                     // 7
    "      --port {port} \\\n"                // 8
    "      --max-num-seqs {max_num_seqs}\n";  // 9: '{' in column 22

TEST(RenderCommand, MissingPlaceholderInBlockScalarNamesLineAndColumn) {
  Recipe recipe = MustParse(kBlockCommand);
  EXPECT_EQ(recipe.locations["command.text"].line, 7);
  EXPECT_EQ(recipe.locations["command.text"].column, 3);
  absl::StatusOr<std::string> command = RenderCommand(recipe, recipe.defaults);
  EXPECT_EQ(command.status().message(),
            "x.yaml:9:22: command uses {max_num_seqs} but no value has that name; known: port; "
            "add it to defaults or pass -o max_num_seqs=VALUE");
  absl::StatusOr<Values> values = EffectiveValues(recipe, {{"max_num_seqs", "4"}});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(RenderCommand(recipe, *values).value_or(""),
            "vllm serve m \\\n    --port 8000 \\\n    --max-num-seqs 4\n");
}

TEST(RenderCommand, MissingPlaceholderInOneLineScalars) {
  const std::string head = absl::StrCat(kV1, "defaults:\n  port: 8000\n");  // lines 1-5
  Recipe plain = MustParse(absl::StrCat(head, "command: vllm --port {prot}\n"));
  EXPECT_EQ(RenderCommand(plain, plain.defaults).status().message(),
            "x.yaml:6:22: command uses {prot} but no value has that name; did you mean {port}? "
            "known: port; add it to defaults or pass -o prot=VALUE");
  Recipe quoted = MustParse(absl::StrCat(head, "command: \"vllm --port {prot}\"\n"));
  EXPECT_THAT(std::string(RenderCommand(quoted, quoted.defaults).status().message()),
              ::testing::StartsWith("x.yaml:6:23: command uses {prot}"));
  Recipe single = MustParse(absl::StrCat(head, "command:   'vllm {{x}} {prot}'\n"));
  EXPECT_THAT(std::string(RenderCommand(single, single.defaults).status().message()),
              ::testing::StartsWith("x.yaml:6:24: command uses {prot}"));
  // A folded scalar's characters move when lines fold: the error names the key instead.
  Recipe folded = MustParse(absl::StrCat(head, "command: >\n  vllm\n  --port {prot}\n"));
  EXPECT_EQ(folded.locations.count("command.text"), 0u);
  EXPECT_THAT(std::string(RenderCommand(folded, folded.defaults).status().message()),
              ::testing::StartsWith("x.yaml:6:1: command uses {prot}"));
  // An escape shifts the characters of a double-quoted scalar: the key again.
  Recipe escaped = MustParse(absl::StrCat(head, "command: \"a\\tb {prot}\"\n"));
  EXPECT_EQ(escaped.locations.count("command.text"), 0u);
}

TEST(RenderCommand, BracesFollowPythonFormat) {
  Recipe recipe = MustParse(absl::StrCat(kV1, "defaults:\n  n: 2\n  j: '{\"k\": 1}'\n",
                                         "command: |\n  run '{{\"n\":{n}}}' {j} }}{{ {{{n}}}\n"));
  // {{{n}}} is "{" + value + "}", as in Python.
  EXPECT_EQ(RenderWithDefaults(recipe), "run '{\"n\":2}' {\"k\": 1} }{ {2}\n");
  // Later values win, as in the dict run-recipe.py builds.
  EXPECT_EQ(RenderCommand(recipe, {{"n", "1"}, {"j", "x"}, {"n", "3"}}).value_or(""),
            "run '{\"n\":3}' x }{ {3}\n");
}

TEST(RenderCommand, SyntaxErrorsAreReportedAtLoad) {
  // Line 4 is "command: |", so the command's text starts on line 5, column 3.
  auto error = [](absl::string_view body) {
    return ParseError(absl::StrCat(kV1, "command: |\n  ", body, "\n"));
  };
  EXPECT_EQ(error("run }"),
            "x.yaml:5:7: single '}' in command (Python: \"Single '}' encountered in format "
            "string\"); write }} for a literal brace");
  EXPECT_EQ(error("run {port --x"),
            "x.yaml:5:7: '{' is never closed (Python: \"expected '}' before end of string\"); "
            "write {{ for a literal brace");
  EXPECT_EQ(error("run '{\"a\":1}'"),
            "x.yaml:5:8: {\"a\":1}: format specs such as {x:>5} are not supported; write {name}, "
            "and {{ }} for literal braces (JSON)");
  EXPECT_EQ(error("run {0}"),
            "x.yaml:5:7: {0}: positional fields are not supported; name the value");
  EXPECT_EQ(error("run {}"),
            "x.yaml:5:7: {} (automatic numbering) is not supported; name the value, e.g. {port}");
  EXPECT_THAT(error("run {x:>5}"), HasSubstr("x.yaml:5:7: {x:>5}: format specs"));
  EXPECT_EQ(error("run {x!r}"),
            "x.yaml:5:7: {x!r}: conversions such as !r are not supported; write {name}");
  EXPECT_EQ(error("run {a.b}"),
            "x.yaml:5:7: {a.b}: attribute and index lookups are not supported; write {name}");
  EXPECT_THAT(error("run {a[0]}"), HasSubstr("x.yaml:5:7: {a[0]}: attribute and index"));
  EXPECT_THAT(error("a\n  b {c{d}}"), HasSubstr("x.yaml:6:5: {c{d}}: nested braces"));
}

// ---------------------------------------------------------------------------------------------
// Overrides.

TEST(Overrides, ParseOverride) {
  absl::StatusOr<Override> o = ParseOverride("speculative_config={\"a\":1}=x");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->key, "speculative_config");
  EXPECT_EQ(o->value, "{\"a\":1}=x");
  EXPECT_EQ(ParseOverride("host=").value_or(Override{}).value, "");
  EXPECT_EQ(ParseOverride("max_num_seqs").status().message(),
            "an override is KEY=VALUE, e.g. -o max_num_seqs=8; found \"max_num_seqs\"");
  EXPECT_EQ(ParseOverride("=8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseOverride("max seqs=8").status().message(),
            "override key \"max seqs\" cannot hold spaces or braces; write KEY=VALUE");
}

TEST(Overrides, ReplaceInPlaceAndAppendNewPlaceholders) {
  Recipe recipe = MustParse(
      absl::StrCat(kV1, "defaults:\n  port: 8000\n  max_num_seqs: 2\n  host: 0.0.0.0\n",
                   "command: vllm --host {host} --port {port} -n {max_num_seqs} --x {extra}\n"));
  absl::StatusOr<Values> values = EffectiveValues(
      recipe, {{"extra", "1"}, {"max_num_seqs", "8"}, {"port", "9000"}, {"extra", "2"}});
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(Pair("port", "9000"), Pair("max_num_seqs", "8"),
                                   Pair("host", "0.0.0.0"), Pair("extra", "2")));
  // Override values are the text given on the command line, not re-read as YAML.
  EXPECT_THAT(*EffectiveValues(recipe, {{"host", "yes"}}),
              ::testing::Contains(Pair("host", "yes")));
  EXPECT_EQ(EffectiveValues(recipe, {{"max_num_seq", "4"}}).status().message(),
            "override max_num_seq=4: recipe x.yaml has no value \"max_num_seq\" in its defaults "
            "or its command; did you mean \"max_num_seqs\"?");
  // A default the command does not use may still be overridden: run-recipe.py accepts it.
  Recipe unused = MustParse(absl::StrCat(kV1, "defaults:\n  spare: 1\ncommand: run\n"));
  EXPECT_THAT(*EffectiveValues(unused, {{"spare", "2"}}), ElementsAre(Pair("spare", "2")));
}

// ---------------------------------------------------------------------------------------------
// Group size.

TEST(GroupSize, FromNodesOrParallelism) {
  Recipe recipe = MustParse(
      absl::StrCat(kV1, "defaults:\n  tensor_parallel: 2\n  pipeline_parallel: 2\ncommand: run\n"));
  EXPECT_EQ(GroupSize(recipe, recipe.defaults).value_or(-1), 4);
  EXPECT_EQ(
      GroupSize(recipe,
                {{"tensor_parallel", "2"}, {"pipeline_parallel", "2"}, {"tensor_parallel", "4"}})
          .value_or(-1),
      8);
  EXPECT_EQ(GroupSize(recipe, {}).value_or(-1), 1);
  Recipe v2 =
      MustParse(absl::StrCat(kV2, "nodes: 3\ndefaults:\n  tensor_parallel: 2\n", "command: run\n"));
  EXPECT_EQ(GroupSize(v2, v2.defaults).value_or(-1), 3);
}

TEST(GroupSize, ParallelismMustBePositiveIntegers) {
  Recipe recipe = MustParse(absl::StrCat(
      kV1, "defaults:\n  tensor_parallel: two\n  pipeline_parallel: 0\ncommand: run\n"));
  EXPECT_EQ(GroupSize(recipe, recipe.defaults).status().message(),
            "x.yaml:5:3: \"tensor_parallel\" must be a positive integer, found \"two\"");
  EXPECT_EQ(GroupSize(recipe, {{"pipeline_parallel", "0"}}).status().message(),
            "x.yaml:6:3: \"pipeline_parallel\" must be a positive integer, found \"0\"");
}

TEST(GroupSize, SoloAndClusterOnly) {
  absl::StatusOr<Recipe> cluster =
      LoadRecipe(SourcePath("tests/fixtures/recipes/deepseek-v4-flash.yaml"));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::StatusOr<Values> one = EffectiveValues(*cluster, {{"tensor_parallel", "1"}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(GroupSize(*cluster, *one).status().message(),
            absl::StrCat(cluster->path,
                         ":12:1: a cluster_only recipe needs at least 2 nodes, "
                         "but tensor_parallel x pipeline_parallel is 1"));

  absl::StatusOr<Recipe> solo =
      LoadRecipe(SourcePath("tests/fixtures/recipes/nemotron-3-nano-nvfp4.yaml"));
  ASSERT_TRUE(solo.ok()) << solo.status();
  EXPECT_EQ(GroupSize(*solo, {{"tensor_parallel", "2"}}).status().message(),
            absl::StrCat(solo->path,
                         ":17:1: a solo_only recipe runs on 1 node, but "
                         "tensor_parallel 2 x pipeline_parallel 1 needs 2; override "
                         "tensor_parallel=1"));

  Recipe nodes = MustParse(absl::StrCat(kV2, "command: run\nsolo_only: true\nnodes: 2\n"));
  EXPECT_EQ(GroupSize(nodes, {}).status().message(),
            "x.yaml:5:1: a solo_only recipe runs on 1 node, but nodes is 2");
}

TEST(Where, KnownAndUnknownKeys) {
  Recipe recipe = MustParse(kBlockCommand);
  EXPECT_EQ(Where(recipe, "defaults.port"), "x.yaml:5:3: ");
  EXPECT_EQ(Where(recipe, "command"), "x.yaml:6:1: ");
  EXPECT_EQ(Where(recipe, "nodes"), "x.yaml: ");
}

// ---------------------------------------------------------------------------------------------
// Word splitting.

std::vector<std::string> Split(absl::string_view command) {
  absl::StatusOr<std::vector<std::string>> argv = SplitCommand(command);
  EXPECT_TRUE(argv.ok()) << argv.status();
  return argv.ok() ? *argv : std::vector<std::string>{};
}

TEST(SplitCommand, Words) {
  EXPECT_THAT(Split("vllm  serve\tm\n"), ElementsAre("vllm", "serve", "m"));
  EXPECT_THAT(Split("a \\\n    --b c \\\n  --d\n\n"), ElementsAre("a", "--b", "c", "--d"));
  EXPECT_THAT(Split("x --cfg '{\"a\": [1, 2], \"b\": \"c d\"}' y"),
              ElementsAre("x", "--cfg", "{\"a\": [1, 2], \"b\": \"c d\"}", "y"));
  EXPECT_THAT(Split("a\"b c\"'d e'f"), ElementsAre("ab cd ef"));
  EXPECT_THAT(Split("\"\\$HOME \\\"q\\\" \\\\ \\n\" 'it''s'"),
              ElementsAre("$HOME \"q\" \\ \\n", "its"));
  EXPECT_THAT(Split("a\\ b \\$x \\' ''"), ElementsAre("a b", "$x", "'", ""));
  EXPECT_THAT(Split("\"a\\\nb\" c#d $ 100%"), ElementsAre("ab", "c#d", "$", "100%"));
  EXPECT_THAT(Split("'line\\\nkept'"), ElementsAre("line\\\nkept"));
}

TEST(SplitCommand, ShellSyntaxIsAnError) {
  auto error = [](absl::string_view command) {
    return std::string(SplitCommand(command).status().message());
  };
  EXPECT_EQ(error("a | b"),
            "command at line 1, column 3: '|' needs a shell, and SparkFleet runs the command "
            "without one; quote it ('...') to pass it literally");
  EXPECT_THAT(error("a; b"), HasSubstr("line 1, column 2: ';' needs a shell"));
  EXPECT_THAT(error("a && b"), HasSubstr("line 1, column 3: '&' needs a shell"));
  EXPECT_THAT(error("a > log"), HasSubstr("'>' needs a shell"));
  EXPECT_THAT(error("a < in"), HasSubstr("'<' needs a shell"));
  EXPECT_THAT(error("a \\\n  $HOME/x"), HasSubstr("line 2, column 3: '$H' needs a shell"));
  EXPECT_THAT(error("a ${X}"), HasSubstr("'${' needs a shell"));
  EXPECT_THAT(error("a $(date)"), HasSubstr("'$(' needs a shell"));
  EXPECT_THAT(error("a `date`"), HasSubstr("'`' needs a shell"));
  EXPECT_THAT(error("a \"x $Y\""), HasSubstr("column 6: \"$Y\" needs a shell"));
  EXPECT_THAT(error("a # note"), HasSubstr("column 3: a comment ('#') needs a shell"));
  EXPECT_EQ(error("a 'open"),
            "command at line 1, column 3: this ' is never closed; add the "
            "closing '");
  EXPECT_EQ(error("a \"open"),
            "command at line 1, column 3: this \" is never closed; add the "
            "closing \"");
  EXPECT_EQ(error("a \\"), "command at line 1, column 3: a backslash ends the command; remove it");
  EXPECT_EQ(error("a\n  b\n"),
            "command at line 2, column 3: a new line without a backslash before it starts a "
            "second command, which needs a shell; end the previous line with \\");
  EXPECT_EQ(error(" \\\n "), "command is empty; write the program and its arguments");
}

}  // namespace
}  // namespace fleet::engine
