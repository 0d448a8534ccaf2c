// Command templates: Python str.format rendering of a recipe's command, and the POSIX word
// splitting that turns the rendered text into argv without a shell.
#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "launch/internal/recipe_internal.h"
#include "launch/recipe.h"

namespace fleet::engine {
namespace internal {
namespace {

// Why a field run-recipe.py's str.format would accept (or reject less clearly) is refused here:
// SparkFleet renders values as text, so specs, conversions and lookups have no meaning.
std::string UnsupportedField(absl::string_view field) {
  if (field.empty()) {
    return "{} (automatic numbering) is not supported; name the value, e.g. {port}";
  }
  for (char c : field) {
    if (c == '!') {
      return absl::StrCat("{", field, "}: conversions such as !r are not supported; write {name}");
    }
    if (c == ':') {
      return absl::StrCat("{", field,
                          "}: format specs such as {x:>5} are not supported; write {name}, "
                          "and {{ }} for literal braces (JSON)");
    }
    if (c == '.' || c == '[') {
      return absl::StrCat("{", field,
                          "}: attribute and index lookups are not supported; write {name}");
    }
    if (c == '{') {
      return absl::StrCat("{", field,
                          "}: nested braces are not supported; write {{ for a "
                          "literal brace");
    }
  }
  if (std::all_of(field.begin(), field.end(), [](char c) { return absl::ascii_isdigit(c); })) {
    return absl::StrCat("{", field, "}: positional fields are not supported; name the value");
  }
  return "";
}

}  // namespace

absl::StatusOr<std::vector<TemplatePiece>> ParseCommandTemplate(const Recipe& recipe) {
  const std::string& s = recipe.command;
  std::vector<TemplatePiece> pieces;
  TemplatePiece literal;
  auto flush_literal = [&](size_t next_offset) {
    if (!literal.text.empty()) pieces.push_back(std::move(literal));
    literal = TemplatePiece{.offset = next_offset};
  };
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == '{' && i + 1 < s.size() && s[i + 1] == '{') {
      literal.text += '{';
      i += 2;
    } else if (c == '}' && i + 1 < s.size() && s[i + 1] == '}') {
      literal.text += '}';
      i += 2;
    } else if (c == '}') {
      return absl::InvalidArgumentError(
          absl::StrCat(WhereInCommand(recipe, i),
                       "single '}' in command (Python: \"Single '}' encountered in format "
                       "string\"); write }} for a literal brace"));
    } else if (c == '{') {
      // Like Python, a field ends at the '}' that balances its '{'.
      size_t depth = 1;
      size_t j = i + 1;
      for (; j < s.size(); ++j) {
        if (s[j] == '{') ++depth;
        if (s[j] == '}' && --depth == 0) break;
      }
      if (j >= s.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(WhereInCommand(recipe, i),
                         "'{' is never closed (Python: \"expected '}' before end of string\"); "
                         "write {{ for a literal brace"));
      }
      std::string field = s.substr(i + 1, j - i - 1);
      if (std::string why = UnsupportedField(field); !why.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(WhereInCommand(recipe, i), why));
      }
      flush_literal(i);
      pieces.push_back(TemplatePiece{.is_field = true, .text = std::move(field), .offset = i});
      i = j + 1;
      literal.offset = i;
    } else {
      literal.text += c;
      ++i;
    }
  }
  flush_literal(s.size());
  return pieces;
}

std::string WhereInCommand(const Recipe& recipe, size_t offset) {
  auto text = recipe.locations.find("command.text");
  if (text == recipe.locations.end()) return Where(recipe, "command");
  size_t line_start = 0;
  int line = text->second.line;
  for (size_t k = 0; k < offset && k < recipe.command.size(); ++k) {
    if (recipe.command[k] == '\n') {
      ++line;
      line_start = k + 1;
    }
  }
  int column = text->second.column + static_cast<int>(offset - line_start);
  return absl::StrCat(recipe.path, ":", line, ":", column, ": ");
}

}  // namespace internal

absl::StatusOr<std::string> RenderCommand(
    const Recipe& recipe, const std::vector<std::pair<std::string, std::string>>& values) {
  ASSIGN_OR_RETURN(std::vector<internal::TemplatePiece> pieces,
                   internal::ParseCommandTemplate(recipe));
  // Later entries win, as they do in the dict run-recipe.py builds.
  std::map<std::string, const std::string*> by_name;
  std::vector<std::string> names;
  for (const auto& [name, value] : values) {
    if (by_name.emplace(name, &value).second) {
      names.push_back(name);
    } else {
      by_name[name] = &value;
    }
  }
  std::string out;
  for (const internal::TemplatePiece& piece : pieces) {
    if (!piece.is_field) {
      out += piece.text;
      continue;
    }
    auto it = by_name.find(piece.text);
    if (it == by_name.end()) {
      std::string hint;
      if (std::string near = internal::ClosestName(piece.text, names); !near.empty()) {
        hint = absl::StrCat("did you mean {", near, "}? ");
      }
      return absl::InvalidArgumentError(absl::StrCat(
          internal::WhereInCommand(recipe, piece.offset), "command uses {", piece.text,
          "} but no value has that name; ", hint, "known: ", absl::StrJoin(names, ", "),
          "; add it to defaults or pass -o ", piece.text, "=VALUE"));
    }
    out += *it->second;
  }
  return out;
}

namespace {

std::string LineColumn(absl::string_view text, size_t offset) {
  int line = 1;
  size_t line_start = 0;
  for (size_t k = 0; k < offset; ++k) {
    if (text[k] == '\n') {
      ++line;
      line_start = k + 1;
    }
  }
  return absl::StrCat("line ", line, ", column ", offset - line_start + 1);
}

absl::Status NeedsShell(absl::string_view command, size_t offset, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("command at ", LineColumn(command, offset), ": ", what,
                   " needs a shell, and SparkFleet runs the command without one; quote it "
                   "('...') to pass it literally"));
}

// After an unquoted '$', these characters make the shell expand something.
bool StartsExpansion(char c) {
  return absl::ascii_isalnum(c) || c == '_' || c == '{' || c == '(' || c == '@' || c == '*' ||
         c == '#' || c == '?' || c == '!' || c == '$' || c == '-';
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitCommand(absl::string_view command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  auto end_word = [&] {
    if (in_word) words.push_back(std::move(word));
    word.clear();
    in_word = false;
  };
  size_t i = 0;
  const size_t n = command.size();
  while (i < n) {
    char c = command[i];
    if (c == '\\') {
      if (i + 1 == n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "command at ", LineColumn(command, i), ": a backslash ends the command; remove it"));
      }
      if (command[i + 1] != '\n') {
        word += command[i + 1];
        in_word = true;
      }
      i += 2;
    } else if (c == ' ' || c == '\t') {
      end_word();
      ++i;
    } else if (c == '\n') {
      end_word();
      size_t rest = command.find_first_not_of(" \t\n", i);
      if (rest != absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "command at ", LineColumn(command, rest),
            ": a new line without a backslash before it starts a second command, which needs "
            "a shell; end the previous line with \\"));
      }
      i = n;
    } else if (c == '\'') {
      size_t close = command.find('\'', i + 1);
      if (close == absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "command at ", LineColumn(command, i), ": this ' is never closed; add the closing '"));
      }
      word.append(command.data() + i + 1, close - i - 1);
      in_word = true;
      i = close + 1;
    } else if (c == '"') {
      in_word = true;
      size_t open = i++;
      bool closed = false;
      while (i < n && !closed) {
        char d = command[i];
        if (d == '"') {
          closed = true;
          ++i;
        } else if (d == '\\' && i + 1 < n) {
          char e = command[i + 1];
          // Inside double quotes a backslash escapes only these; before others it stays.
          if (e == '$' || e == '`' || e == '"' || e == '\\') {
            word += e;
          } else if (e != '\n') {
            word += d;
            word += e;
          }
          i += 2;
        } else if (d == '`' || (d == '$' && i + 1 < n && StartsExpansion(command[i + 1]))) {
          return NeedsShell(command, i, absl::StrCat("\"", command.substr(i, 2), "\""));
        } else {
          word += d;
          ++i;
        }
      }
      if (!closed) {
        return absl::InvalidArgumentError(absl::StrCat("command at ", LineColumn(command, open),
                                                       ": this \" is never closed; add the "
                                                       "closing \""));
      }
    } else if (c == '|' || c == ';' || c == '&' || c == '<' || c == '>' || c == '(' || c == ')' ||
               c == '`') {
      return NeedsShell(command, i, absl::StrCat("'", std::string(1, c), "'"));
    } else if (c == '$' && i + 1 < n && StartsExpansion(command[i + 1])) {
      return NeedsShell(command, i, absl::StrCat("'", command.substr(i, 2), "'"));
    } else if (c == '#' && !in_word) {
      return NeedsShell(command, i, "a comment ('#')");
    } else {
      word += c;
      in_word = true;
      ++i;
    }
  }
  end_word();
  if (words.empty()) {
    return absl::InvalidArgumentError("command is empty; write the program and its arguments");
  }
  return words;
}

}  // namespace fleet::engine
