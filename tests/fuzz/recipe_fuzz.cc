// libFuzzer target for recipes, which an admin sends over RPC (`fleet apply`): the YAML parser,
// the command template's rendering and the shell-free word splitting. No input may crash them or
// trip a sanitizer; every error is InvalidArgument and names the recipe's path; and what the
// template grammar promises holds for any text: doubled braces render to the text itself, a
// template without braces renders unchanged, and single quotes make one word of anything in them.
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
#include "launch/recipe.h"

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

// The input as a whole recipe: parse, apply defaults, render the command, split it, size the group.
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
