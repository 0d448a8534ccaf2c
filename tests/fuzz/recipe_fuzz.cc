// libFuzzer target for recipes, which an admin sends over RPC (`fleet apply`): the YAML parser,
// the command template's rendering, the shell-free word splitting, and `fleet plan`'s path from a
// parsed recipe to printed text (the plan of every rank on synthetic Sparks, its docker line and
// env file, the JSON and YAML printers). No input may crash them or trip a sanitizer; every error
// is InvalidArgument (or FailedPrecondition, for a plan the nodes cannot take) and says where;
// printed JSON parses back; and what the template grammar promises holds for any text: doubled
// braces render to the text itself, a template without braces renders unchanged, and single
// quotes make one word of anything in them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "cli/document.h"
#include "launch/docker_run.h"
#include "launch/plan.h"
#include "launch/recipe.h"
#include "nlohmann/json.hpp"

namespace fleet::engine {
namespace {

constexpr absl::string_view kPath = "fuzz.yaml";

// Errors of bad input are InvalidArgument and start with the recipe's path ("fuzz.yaml:3:7: ").
void CheckRecipeError(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
  if (!absl::StartsWith(status.message(), kPath)) __builtin_trap();
}

// Errors of SplitCommand are InvalidArgument and point at the command ("command at line ...") or
// say it is empty.
void CheckSplitError(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
  if (!absl::StartsWith(status.message(), "command")) __builtin_trap();
}

// Plan errors of a parsed recipe: bad values (InvalidArgument), an engine the recipe names but
// no adapter has (NotFound) or a placement these nodes cannot take (FailedPrecondition), each
// with a message.
void CheckPlanError(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kNotFound &&
      status.code() != absl::StatusCode::kFailedPrecondition) {
    __builtin_trap();
  }
  if (status.message().empty()) __builtin_trap();
}

// What `fleet plan` does with a recipe that parsed: plan it on `size` Sparks, render each docker
// rank's line as its agent would, and print the plan as JSON and YAML.
void PlanAndPrint(const Recipe& recipe, int size) {
  GroupContext group{.group = recipe.name.empty() ? "fuzz" : recipe.name,
                     .generation = 1,
                     .master_addr = "192.168.100.11",
                     .master_port = 29501};
  for (int i = 1; i <= size; ++i) {
    group.nodes.push_back({.name = absl::StrCat("spark-", i),
                           .node_id = absl::StrCat("n", i),
                           .address = absl::StrCat("10.0.0.", i),
                           .fabric_interface = "enp1s0f1np1",
                           .fabric_address = absl::StrCat("192.168.100.", 10 + i),
                           .rdma_devices = {"rocep1s0f1", "roceP2p1s0f1"},
                           .has_gpus = true,
                           .has_infiniband = true});
  }
  absl::StatusOr<GroupPlan> plan = PlanGroup(recipe, {}, group);
  if (!plan.ok()) return CheckPlanError(plan.status());
  const v1::AgentPaths agent = AgentPathsFor("/root", kAgentDefaultStateDir);
  nlohmann::ordered_json doc = {{"name", plan->group},
                                {"endpoint", plan->endpoint},
                                {"notes", plan->notes},
                                {"ranks", nlohmann::ordered_json::array()}};
  for (const v1::ShardSpec& spec : plan->ranks) {
    nlohmann::ordered_json rank = {
        {"argv", std::vector<std::string>(spec.argv().begin(), spec.argv().end())},
        {"command", ShellLine({spec.argv().begin(), spec.argv().end()})}};
    nlohmann::ordered_json& env = rank["env"] = nlohmann::ordered_json::array();
    for (const v1::EnvVar& var : spec.env())
      env.push_back({{"name", var.name()}, {"value", var.value()}});
    if (spec.runtime() == v1::SHARD_RUNTIME_DOCKER) {
      const std::vector<std::string> line = RenderDockerRunOn(spec, agent, std::nullopt);
      if (line.empty() || line.front() != "docker") __builtin_trap();
      rank["dockerRun"] = line;
      rank["docker"] = ShellLine(line);
      absl::StatusOr<std::string> env_file = RenderEnvFile(spec);
      if (!env_file.ok() && env_file.status().code() != absl::StatusCode::kInvalidArgument) {
        __builtin_trap();
      }
    }
    doc["ranks"].push_back(std::move(rank));
  }
  const std::string json = cli::DumpJson(doc);
  if (nlohmann::ordered_json::parse(json, nullptr, /*allow_exceptions=*/false).is_discarded()) {
    __builtin_trap();
  }
  if (cli::JsonToYaml(doc).empty()) __builtin_trap();
}

// The input as a whole recipe: parse, apply defaults, render the command, split it, size the
// group, then plan and print it.
void FuzzRecipe(absl::string_view input) {
  absl::StatusOr<Recipe> recipe = ParseRecipe(kPath, input);
  if (!recipe.ok()) return CheckRecipeError(recipe.status());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> values =
      EffectiveValues(*recipe, {});
  if (!values.ok()) return CheckRecipeError(values.status());
  absl::StatusOr<int> size = GroupSize(*recipe, *values);
  if (!size.ok()) {
    CheckRecipeError(size.status());
  } else if (*size < 1) {
    __builtin_trap();
  }
  absl::StatusOr<std::string> rendered = RenderCommand(*recipe, *values);
  if (!rendered.ok()) return CheckRecipeError(rendered.status());
  absl::StatusOr<std::vector<std::string>> argv = SplitCommand(*rendered);
  if (!argv.ok()) return CheckSplitError(argv.status());
  if (argv->empty()) __builtin_trap();
  // Up to 8 nodes: a plan is linear in them, and bigger groups find nothing new.
  if (size.ok() && *size <= 8) PlanAndPrint(*recipe, *size);
}

// The input as a command template, with values every recipe has.
void FuzzTemplate(absl::string_view input) {
  const std::vector<std::pair<std::string, std::string>> values = {
      {"port", "8000"}, {"model", "deepseek-ai/DeepSeek-V4-Flash"}, {"tensor_parallel", "2"}};
  Recipe recipe;
  recipe.path = std::string(kPath);
  recipe.command = std::string(input);
  absl::StatusOr<std::string> rendered = RenderCommand(recipe, values);
  if (!rendered.ok()) {
    CheckRecipeError(rendered.status());
  } else if (!absl::StrContains(input, '{') && !absl::StrContains(input, '}') &&
             *rendered != input) {
    __builtin_trap();  // nothing to replace, so nothing may change
  }
  // "{{" and "}}" are literal braces, so doubling every brace of any text renders the text.
  recipe.command = absl::StrReplaceAll(input, {{"{", "{{"}, {"}", "}}"}});
  absl::StatusOr<std::string> literal = RenderCommand(recipe, values);
  if (!literal.ok() || *literal != input) __builtin_trap();

  absl::StatusOr<std::vector<std::string>> argv = SplitCommand(input);
  if (!argv.ok()) {
    CheckSplitError(argv.status());
  } else if (argv->empty()) {
    __builtin_trap();
  }
  // Inside single quotes nothing is special: any text without a quote is one word, as written.
  if (!absl::StrContains(input, '\'')) {
    absl::StatusOr<std::vector<std::string>> quoted = SplitCommand(absl::StrCat("'", input, "'"));
    if (!quoted.ok() || quoted->size() != 1 || (*quoted)[0] != input) __builtin_trap();
  }
}

}  // namespace
}  // namespace fleet::engine

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  fleet::engine::FuzzRecipe(input);
  fleet::engine::FuzzTemplate(input);
  return 0;
}
