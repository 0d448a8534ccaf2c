// Details shared by recipe.cc and command_template.cc; not part of the engine's API.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "launch/recipe.h"

namespace fleet::engine::internal {

// One piece of a command template: literal text (braces already undoubled) or a {name} field.
struct TemplatePiece {
  bool is_field = false;
  std::string text;   // the literal text, or the field's name
  size_t offset = 0;  // where the piece starts in recipe.command (the '{' of a field)
};

// Splits recipe.command with Python str.format's grammar. Errors name the position in the file.
absl::StatusOr<std::vector<TemplatePiece>> ParseCommandTemplate(const Recipe& recipe);

// "PATH:LINE:COL: " of byte `offset` of recipe.command: exact when locations has
// "command.text", else the position of the `command` key.
std::string WhereInCommand(const Recipe& recipe, size_t offset);

// The candidate nearest to `word` by edit distance, or "" when none is near enough to be a
// likely typo.
std::string ClosestName(absl::string_view word, const std::vector<std::string>& candidates);

}  // namespace fleet::engine::internal
