// Recipe files → Recipe structs. Version 1 follows spark-vllm-docker's run-recipe.py, which
// loads the file with PyYAML (YAML 1.1) and renders values with Python's str(); version 2 adds
// SparkFleet's keys. yaml-cpp parses; its exceptions stop here and become InvalidArgument.
#include "launch/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/process/rlimits.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "launch/internal/recipe_internal.h"

namespace fleet::engine {
namespace internal {

std::string ClosestName(absl::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& candidate : candidates) {
    // Levenshtein distance, one row at a time.
    std::vector<size_t> row(candidate.size() + 1);
    for (size_t j = 0; j <= candidate.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= candidate.size(); ++j) {
        size_t above = row[j];
        size_t substitute = diagonal + (word[i - 1] == candidate[j - 1] ? 0 : 1);
        row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
        diagonal = above;
      }
    }
    if (row[candidate.size()] < best_distance) {
      best_distance = row[candidate.size()];
      best = candidate;
    }
  }
  // A third of the word (at least 2 edits: one transposition) is still a typo; more is a
  // different word, and suggesting it would mislead.
  if (best_distance > std::max<size_t>(2, word.size() / 3)) return "";
  return best;
}

}  // namespace internal

namespace {

// Engines that have an adapter (launch/adapters/registry.cc); the one list the parser checks.
const std::vector<std::string>& KnownEngines() {
  static const auto* engines = new std::vector<std::string>{"vllm", "exec", "native", "llamacpp"};
  return *engines;
}

// Top-level keys of run-recipe.py's schema (its load_recipe docstring).
const std::vector<std::string>& Version1Keys() {
  static const auto* keys = new std::vector<std::string>{
      "recipe_version", "name",     "description", "model",      "container",    "command",
      "mods",           "defaults", "env",         "build_args", "cluster_only", "solo_only"};
  return *keys;
}

const std::vector<std::string>& Version2Keys() {
  static const auto* keys = new std::vector<std::string>{
      "engine", "nodes",      "replicas", "placement", "runtime", "requires",
      "mounts", "cache_dirs", "health",   "restart",   "rollout", "router"};
  return *keys;
}

bool Contains(const std::vector<std::string>& list, absl::string_view word) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

// "; did you mean "x"?" or "; known: a, b" for an unknown `word`.
std::string Suggest(absl::string_view word, const std::vector<std::string>& known) {
  std::string near = internal::ClosestName(word, known);
  if (!near.empty()) return absl::StrCat("; did you mean \"", near, "\"?");
  return absl::StrCat("; known: ", absl::StrJoin(known, ", "));
}

// A YAML scalar as PyYAML's safe_load types it.
enum class Kind { kNull, kBool, kInt, kFloat, kString };

struct PyValue {
  Kind kind = Kind::kString;
  std::string text;  // what Python's str() prints for the value
};

// The implicit resolvers of PyYAML 6 (resolver.py), which implement YAML 1.1: `yes`, `on` and
// `0755` are typed there although YAML 1.2 would keep them strings.
bool MatchesBool(const std::string& s) {
  static const std::regex re(
      "yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF");
  return std::regex_match(s, re);
}
bool MatchesInt(const std::string& s) {
  static const std::regex re(
      "[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
      "|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+");
  return std::regex_match(s, re);
}
bool MatchesFloat(const std::string& s) {
  static const std::regex re(
      "[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?|\\.[0-9_]+(?:[eE][-+][0-9]+)?"
      "|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(?:inf|Inf|INF)"
      "|\\.(?:nan|NaN|NAN)");
  return std::regex_match(s, re);
}
bool MatchesTimestamp(const std::string& s) {
  static const std::regex re(
      "[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \\t]+)[0-9][0-9]?:[0-9][0-9]"
      ":[0-9][0-9](?:\\.[0-9]*)?(?:[ \\t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?");
  return std::regex_match(s, re);
}

// Python's repr() of a float (also its str()): the shortest digits that read back to the same
// double, in fixed notation while the decimal exponent is in [-4, 16), else as 1.5e-07.
std::string PythonFloat(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string sci(buf, result.ptr);  // "-1.2345e+02": shortest round-trip digits
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  size_t e = sci.find('e');
  std::string digits = absl::StrReplaceAll(sci.substr(0, e), {{".", ""}});
  int exponent = 0;
  std::from_chars(sci.data() + e + (sci[e + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exponent);
  int point = exponent + 1;  // digits = 0.DDDD × 10^point, as CPython's dtoa counts it
  int n = static_cast<int>(digits.size());
  if (point > -4 && point <= 16) {
    if (point <= 0) return absl::StrCat(sign, "0.", std::string(-point, '0'), digits);
    if (point >= n) return absl::StrCat(sign, digits, std::string(point - n, '0'), ".0");
    return absl::StrCat(sign, digits.substr(0, point), ".", digits.substr(point));
  }
  std::string mantissa = digits.substr(0, 1);
  if (n > 1) absl::StrAppend(&mantissa, ".", digits.substr(1));
  int shown = std::abs(point - 1);
  return absl::StrCat(sign, mantissa, "e", point - 1 < 0 ? "-" : "+", shown < 10 ? "0" : "", shown);
}

// PyYAML's construct_yaml_int, printed as Python prints the int. Errors name what to change.
absl::StatusOr<std::string> PythonInt(std::string s) {
  s = absl::StrReplaceAll(s, {{"_", ""}});
  bool negative = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.erase(0, 1);
  int base = 10;
  std::vector<std::string> sexagesimal;
  if (s == "0") return std::string("0");
  if (absl::StartsWith(s, "0b")) {
    base = 2;
    s.erase(0, 2);
  } else if (absl::StartsWith(s, "0x")) {
    base = 16;
    s.erase(0, 2);
  } else if (s[0] == '0') {
    base = 8;
  } else if (absl::StrContains(s, ':')) {
    sexagesimal = absl::StrSplit(s, ':');
  } else {
    // Decimal: Python prints the digits as written, whatever their size.
    return absl::StrCat(negative ? "-" : "", s);
  }
  uint64_t value = 0;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (!sexagesimal.empty()) {
    for (const std::string& part : sexagesimal) {
      uint64_t digit = 0;
      if (!absl::SimpleAtoi(part, &digit) || value > (kMax - digit) / 60) {
        return absl::InvalidArgumentError("integer is too large; quote it");
      }
      value = value * 60 + digit;
    }
  } else {
    if (s.empty()) return absl::InvalidArgumentError("integer has no digits; quote it");
    for (char c : s) {
      uint64_t digit = absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
      if (value > (kMax - digit) / base) {
        return absl::InvalidArgumentError("integer is too large; quote it");
      }
      value = value * base + digit;
    }
  }
  if (value == 0) return std::string("0");
  return absl::StrCat(negative ? "-" : "", value);
}

// PyYAML's construct_yaml_float.
std::string PyYamlFloat(std::string s) {
  s = absl::AsciiStrToLower(absl::StrReplaceAll(s, {{"_", ""}}));
  double sign = 1;
  if (s[0] == '-') sign = -1;
  if (s[0] == '-' || s[0] == '+') s.erase(0, 1);
  if (s == ".inf") return PythonFloat(sign * std::numeric_limits<double>::infinity());
  if (s == ".nan") return PythonFloat(std::numeric_limits<double>::quiet_NaN());
  auto parse = [](absl::string_view text) {
    double d = 0;
    std::from_chars(text.data(), text.data() + text.size(), d);
    return d;
  };
  if (absl::StrContains(s, ':')) {
    double value = 0;
    for (absl::string_view part : absl::StrSplit(s, ':')) value = value * 60 + parse(part);
    return PythonFloat(sign * value);
  }
  return PythonFloat(sign * parse(s));
}

const char* TypeName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
      return "nothing";
    default:
      return "a value";
  }
}

// What an error says it found: the scalar itself, or the kind of node.
std::string Found(const YAML::Node& node) {
  if (node.IsScalar()) return absl::StrCat("\"", node.Scalar(), "\"");
  return TypeName(node);
}

// Sizes: a count of bytes, or a number with a unit k, m, g, t (an "i" and a "b" may follow:
// "64Gi", "16gb"). Every unit is a power of 1024, as in docker's --shm-size and --memory.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  size_t digits_end = 0;
  while (digits_end < s.size() && (absl::ascii_isdigit(s[digits_end]) || s[digits_end] == '.')) {
    ++digits_end;
  }
  std::string number = s.substr(0, digits_end);
  std::string unit = s.substr(digits_end);
  if (!unit.empty() && unit.back() == 'b') unit.pop_back();
  if (unit.size() == 2 && unit[1] == 'i') unit.pop_back();
  static constexpr absl::string_view kUnits = "kmgt";
  double scale = 1;
  if (!unit.empty()) {
    size_t power = kUnits.find(unit);
    if (unit.size() != 1 || power == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("a size must be bytes or a number with k, m, "
                       "g or t (powers of 1024), found \"",
                       text, "\""));
    }
    scale = std::pow(1024.0, static_cast<double>(power + 1));
  }
  double value = 0;
  auto parsed = std::from_chars(number.data(), number.data() + number.size(), value);
  if (number.empty() || parsed.ptr != number.data() + number.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a size must be bytes or a number with k, m, g or t (powers of 1024), found \"", text,
        "\""));
  }
  double bytes = value * scale;
  if (bytes >= std::ldexp(1.0, 64)) {
    return absl::InvalidArgumentError(absl::StrCat("size \"", text, "\" is too large"));
  }
  if (unit.empty() && absl::StrContains(number, '.')) {
    return absl::InvalidArgumentError(
        absl::StrCat("a size in bytes must be a whole number, found \"", text, "\""));
  }
  return static_cast<uint64_t>(bytes);
}

// Everything the parser needs about one file: its path and text (to place the command's
// characters exactly) and the recipe being filled.
class Parser {
 public:
  Parser(absl::string_view source, Recipe* recipe) : source_(source), recipe_(*recipe) {}

  absl::Status Parse(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) {
      return absl::InvalidArgumentError(
          absl::StrCat(recipe_.path,
                       ":1:1: expected a map of recipe keys (recipe_version, name, container, "
                       "command, ...), found an empty document"));
    }
    if (!root.IsMap()) {
      return Error(root, absl::StrCat("expected a map of recipe keys (recipe_version, name, "
                                      "container, command, ...), found ",
                                      TypeName(root)));
    }
    // YAML::Node's operator= writes through to the node it refers to, so nodes are kept by
    // copy construction (std::optional::emplace) and keys by their marks.
    std::optional<YAML::Node> version_node;
    YAML::Mark version_key;
    for (auto it = root.begin(); it != root.end(); ++it) {
      if (!it->first.IsScalar()) {
        return Error(it->first, absl::StrCat("expected a key name, found ", TypeName(it->first)));
      }
      const std::string& key = it->first.Scalar();
      if (recipe_.locations.count(key) != 0) {
        return Error(it->first, absl::StrCat("key \"", key, "\" is written twice; keep one"));
      }
      recipe_.locations[key] = Location(it->first);
      if (key == "recipe_version") {
        version_key = it->first.Mark();
        version_node.emplace(it->second);
      }
      nodes_.emplace(key, it->second);
    }
    if (!version_node.has_value()) {
      // run-recipe.py refuses such a file too ("Recipe missing required field").
      return Error(root,
                   "missing required key \"recipe_version\"; add recipe_version: \"1\" "
                   "(the community format) or \"2\"");
    }
    key_mark_ = version_key;
    ASSIGN_OR_RETURN(PyValue version, Value(*version_node));
    // The string "1" and the integer 1 print alike; run-recipe.py compares str(value) too.
    if (version.text == "1") {
      recipe_.version = 1;
    } else if (version.text == "2") {
      recipe_.version = 2;
    } else {
      return Error(*version_node, absl::StrCat("\"recipe_version\" must be \"1\" or \"2\", "
                                               "found ",
                                               Found(*version_node)));
    }

    std::vector<std::string> all_keys = Version1Keys();
    all_keys.insert(all_keys.end(), Version2Keys().begin(), Version2Keys().end());
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string& key = it->first.Scalar();
      if (Contains(Version2Keys(), key) && recipe_.version == 1) {
        return Error(it->first, absl::StrCat("\"", key,
                                             "\" is a version-2 key; set "
                                             "recipe_version: \"2\" to use it"));
      }
      if (!Contains(all_keys, key)) {
        return Error(it->first, absl::StrCat("unknown key \"", key, "\"", Suggest(key, all_keys)));
      }
      key_mark_ = it->first.Mark();
      RETURN_IF_ERROR(Key(key, it->second));
    }
    return Finish(root);
  }

 private:
  static SourceLocation Location(const YAML::Mark& mark) {
    if (mark.line < 0) return SourceLocation{};
    return SourceLocation{mark.line + 1, mark.column + 1};
  }
  static SourceLocation Location(const YAML::Node& node) { return Location(node.Mark()); }

  // An implicit null (`env:` followed by nothing) carries the mark of the next token, so errors
  // about it point at its key instead.
  absl::Status Error(const YAML::Node& node, absl::string_view message) const {
    SourceLocation at = node.IsNull() ? Location(key_mark_) : Location(node);
    if (at.line == 0) at = SourceLocation{1, 1};
    return absl::InvalidArgumentError(
        absl::StrCat(recipe_.path, ":", at.line, ":", at.column, ": ", message));
  }

  // A scalar typed and printed the way PyYAML and Python would.
  absl::StatusOr<PyValue> Value(const YAML::Node& node) const {
    if (node.IsNull()) return PyValue{Kind::kNull, "None"};
    if (!node.IsScalar()) {
      return Error(node, absl::StrCat("expected a single value, found ", TypeName(node)));
    }
    const std::string& s = node.Scalar();
    const std::string& tag = node.Tag();
    // "!" marks quoted and block scalars, which PyYAML never retypes.
    if (tag == "!" || tag == "tag:yaml.org,2002:str") return PyValue{Kind::kString, s};
    if (tag != "?") {
      return Error(node, absl::StrCat("explicit tag ", tag, " is not supported; remove it"));
    }
    if (MatchesBool(s)) {
      char first = absl::ascii_tolower(s[0]);
      return PyValue{
          Kind::kBool,
          first == 'y' || first == 't' || s == "on" || s == "On" || s == "ON" ? "True" : "False"};
    }
    if (MatchesInt(s)) {
      absl::StatusOr<std::string> text = PythonInt(s);
      if (!text.ok()) return Error(node, absl::StrCat("\"", s, "\": ", text.status().message()));
      return PyValue{Kind::kInt, *std::move(text)};
    }
    if (MatchesFloat(s)) return PyValue{Kind::kFloat, PyYamlFloat(s)};
    if (s == "=") {
      // PyYAML resolves a bare "=" to its "value" tag and then fails to construct it.
      return Error(node, "a bare = cannot be loaded by PyYAML; quote it");
    }
    if (MatchesTimestamp(s)) {
      return Error(node, absl::StrCat("\"", s,
                                      "\" is a YAML timestamp, which Python would print "
                                      "differently; quote it"));
    }
    // A bare date (2026-07-01) is a datetime.date in PyYAML, whose str() is the same text.
    return PyValue{Kind::kString, s};
  }

  absl::StatusOr<std::string> String(const YAML::Node& node, absl::string_view key,
                                     bool allow_empty) const {
    if (node.IsNull() && allow_empty) return std::string();
    if (!node.IsScalar() || node.Scalar().empty()) {
      return Error(node,
                   absl::StrCat("\"", key, "\" must be a non-empty string, found ", Found(node)));
    }
    return node.Scalar();
  }

  absl::StatusOr<bool> Bool(const YAML::Node& node, absl::string_view key) const {
    if (node.IsNull()) return false;  // run-recipe.py tests truthiness; None is false
    ASSIGN_OR_RETURN(PyValue value, Value(node));
    if (value.kind != Kind::kBool) {
      return Error(node, absl::StrCat("\"", key, "\" must be true or false, found ", Found(node)));
    }
    return value.text == "True";
  }

  absl::StatusOr<int64_t> Integer(const YAML::Node& node, absl::string_view key, int64_t min,
                                  int64_t max) const {
    absl::StatusOr<PyValue> value = Value(node);
    int64_t n = 0;
    if (!value.ok() || value->kind != Kind::kInt || !absl::SimpleAtoi(value->text, &n) || n < min ||
        n > max) {
      std::string range = max == std::numeric_limits<int>::max()
                              ? absl::StrCat(">= ", min)
                              : absl::StrCat("from ", min, " to ", max);
      return Error(
          node, absl::StrCat("\"", key, "\" must be an integer ", range, ", found ", Found(node)));
    }
    return n;
  }

  absl::StatusOr<std::vector<std::string>> StringList(const YAML::Node& node,
                                                      absl::string_view key) const {
    std::vector<std::string> out;
    if (node.IsNull()) return out;
    if (!node.IsSequence()) {
      return Error(node,
                   absl::StrCat("\"", key, "\" must be a list of strings, found ", Found(node)));
    }
    for (const YAML::Node& item : node) {
      if (!item.IsScalar() || item.Scalar().empty()) {
        return Error(item, absl::StrCat("items of \"", key, "\" must be non-empty strings, found ",
                                        Found(item)));
      }
      out.push_back(item.Scalar());
    }
    return out;
  }

  // `defaults` and `env`: a map of names to single values, printed as run-recipe.py prints
  // them (defaults through str.format, env through f'export {key}="{value}"': both str()).
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Values(const YAML::Node& node,
                                                                          absl::string_view key) {
    std::vector<std::pair<std::string, std::string>> out;
    if (node.IsNull()) return out;
    if (!node.IsMap()) {
      return Error(node, absl::StrCat("\"", key, "\" must be a map of names to values, found ",
                                      Found(node)));
    }
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar()) {
        return Error(it->first, absl::StrCat("keys of \"", key, "\" must be names, found ",
                                             TypeName(it->first)));
      }
      const std::string& name = it->first.Scalar();
      if (!seen.insert(name).second) {
        return Error(it->first,
                     absl::StrCat("\"", key, ".", name, "\" is written twice; keep one"));
      }
      if (it->second.IsSequence() || it->second.IsMap()) {
        return Error(it->second, absl::StrCat("\"", key, ".", name,
                                              "\" must be a single value (a string, number or "
                                              "boolean), found ",
                                              TypeName(it->second)));
      }
      key_mark_ = it->first.Mark();
      ASSIGN_OR_RETURN(PyValue value, Value(it->second));
      if (key == "defaults") {
        recipe_.locations[absl::StrCat("defaults.", name)] = Location(it->first);
      }
      out.emplace_back(name, value.text);
    }
    return out;
  }

  // Where the command's characters sit in the file, when that is a plain shift: a literal
  // block (`|`, every line at the block's indentation) or a one-line scalar written without
  // escapes. Other forms (folded, escaped, multi-line flow) keep the `command` key's position.
  void RecordCommandText(const YAML::Node& node) {
    YAML::Mark mark = node.Mark();
    if (mark.pos < 0 || static_cast<size_t>(mark.pos) >= source_.size()) return;
    const std::string& text = recipe_.command;
    size_t pos = static_cast<size_t>(mark.pos);
    char first = source_[pos];
    if (first == '|') {
      size_t p = pos + 1;
      while (p < source_.size() && (source_[p] == '-' || source_[p] == '+')) ++p;
      if (p < source_.size() && absl::ascii_isdigit(source_[p])) return;  // explicit indent
      size_t line_end = source_.find('\n', pos);
      if (line_end == absl::string_view::npos) return;
      std::vector<absl::string_view> lines = absl::StrSplit(source_.substr(line_end + 1), '\n');
      size_t indent = std::string::npos;
      for (absl::string_view line : lines) {
        size_t content = line.find_first_not_of(' ');
        if (content != absl::string_view::npos) {
          indent = content;
          break;
        }
      }
      if (indent == std::string::npos) return;
      std::vector<absl::string_view> value_lines = absl::StrSplit(text, '\n');
      for (size_t k = 0; k < value_lines.size(); ++k) {
        if (value_lines[k].empty()) continue;
        if (k >= lines.size() || lines[k].size() < indent ||
            lines[k].substr(indent) != value_lines[k]) {
          return;
        }
      }
      recipe_.locations["command.text"] =
          SourceLocation{mark.line + 2, static_cast<int>(indent) + 1};
      return;
    }
    if (absl::StrContains(text, '\n')) return;
    int quote = (first == '"' || first == '\'') ? 1 : 0;
    if (source_.substr(pos + quote, text.size()) != text) return;
    if (quote == 1 && source_.substr(pos + 1 + text.size(), 1) != absl::string_view(&first, 1)) {
      return;
    }
    recipe_.locations["command.text"] = SourceLocation{mark.line + 1, mark.column + 1 + quote};
  }

  absl::Status Requires(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node, absl::StrCat("\"requires\" must be a map, found ", Found(node)));
    }
    static const auto* kKeys =
        new std::vector<std::string>{"nccl", "memlock", "shm", "mtu", "gpu_arch", "min_free_disk"};
    Requirements& r = recipe_.requirements;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      // A copy (a Node is a handle): yaml-cpp's operator-> returns a temporary proxy, so a
      // reference to it->second dangles at the end of this statement.
      const YAML::Node value = it->second;
      key_mark_ = it->first.Mark();
      if (!Contains(*kKeys, key)) {
        return Error(it->first,
                     absl::StrCat("unknown key \"requires.", key, "\"", Suggest(key, *kKeys)));
      }
      if (key == "mtu") {
        ASSIGN_OR_RETURN(int64_t mtu, Integer(value, "requires.mtu", 68, 65535));
        r.mtu = static_cast<uint32_t>(mtu);
        continue;
      }
      ASSIGN_OR_RETURN(std::string text, String(value, absl::StrCat("requires.", key), false));
      if (key == "nccl") {
        static const std::regex re("(>=|<=|==|>|<) *[0-9]+(\\.[0-9]+)*");
        if (!std::regex_match(text, re)) {
          return Error(value, absl::StrCat("\"requires.nccl\" must be OP VERSION with OP one of "
                                           ">=, >, ==, <=, <, e.g. \">=2.30.4\", found \"",
                                           text, "\""));
        }
        r.nccl = text;
      } else if (key == "gpu_arch") {
        static const std::regex re("sm_[0-9]{2,3}[a-z]?");
        if (!std::regex_match(text, re)) {
          return Error(value, absl::StrCat("\"requires.gpu_arch\" must look like \"sm_121\", "
                                           "found \"",
                                           text, "\""));
        }
        r.gpu_arch = text;
      } else {
        if (key == "memlock" && r.memlock_bytes.has_value()) {
          return Error(value,
                       "\"requires.memlock\" is also set by \"runtime.ulimits.memlock\"; "
                       "write it once");
        }
        if (key == "memlock" && text == "unlimited") {
          r.memlock_bytes = std::numeric_limits<uint64_t>::max();
          continue;
        }
        absl::StatusOr<uint64_t> bytes = ParseSize(text);
        if (!bytes.ok()) {
          return Error(value, absl::StrCat("\"requires.", key, "\": ", bytes.status().message(),
                                           key == "memlock" ? " (or \"unlimited\")" : ""));
        }
        if (key == "memlock") r.memlock_bytes = *bytes;
        if (key == "shm") r.shm_bytes = *bytes;
        if (key == "min_free_disk") r.min_free_disk_bytes = *bytes;
      }
    }
    return absl::OkStatus();
  }

  absl::Status RuntimeType(const YAML::Node& value, absl::string_view key) {
    ASSIGN_OR_RETURN(std::string runtime, String(value, key, false));
    if (runtime != "docker" && runtime != "process") {
      return Error(value, absl::StrCat("\"", key, "\" must be docker or process, found \"", runtime,
                                       "\"", Suggest(runtime, {"docker", "process"})));
    }
    recipe_.runtime = runtime == "docker" ? RuntimeKind::kDocker : RuntimeKind::kProcess;
    return absl::OkStatus();
  }

  // `runtime: docker`, or `runtime: {type: docker, ulimits: {stack: 67108864, ...}}`.
  absl::Status Runtime(const YAML::Node& node) {
    if (!node.IsMap()) return RuntimeType(node, "runtime");
    static const auto* kKeys = new std::vector<std::string>{"type", "ulimits"};
    bool typed = false;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      key_mark_ = it->first.Mark();
      if (!Contains(*kKeys, key)) {
        return Error(it->first,
                     absl::StrCat("unknown key \"runtime.", key, "\"", Suggest(key, *kKeys)));
      }
      if (key == "type") {
        RETURN_IF_ERROR(RuntimeType(it->second, "runtime.type"));
        typed = true;
      } else {
        RETURN_IF_ERROR(Ulimits(it->second));
      }
    }
    if (!typed) {
      return Error(node,
                   "\"runtime\" as a map needs \"type\" (docker or process), e.g. "
                   "runtime: {type: docker, ulimits: {stack: 67108864}}");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> UlimitValue(const YAML::Node& node, const std::string& where) {
    ASSIGN_OR_RETURN(std::string text, String(node, where, false));
    if (text == "unlimited" || text == "-1") return std::numeric_limits<uint64_t>::max();
    uint64_t number = 0;
    if (!absl::SimpleAtoi(text, &number)) {
      return Error(node, absl::StrCat("\"", where,
                                      "\" must be a whole number (bytes for memlock and stack, a "
                                      "count for nofile) or \"unlimited\", found \"",
                                      text, "\""));
    }
    return number;
  }

  absl::Status Ulimits(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node, absl::StrCat("\"runtime.ulimits\" must be a map such as {stack: "
                                      "67108864, nofile: 65536}, found ",
                                      Found(node)));
    }
    // docker run --ulimit's names, which are setrlimit(2)'s resources.
    const std::vector<std::string> names = ResourceNames();
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string name = it->first.IsScalar() ? it->first.Scalar() : "";
      key_mark_ = it->first.Mark();
      const std::string where = absl::StrCat("runtime.ulimits.", name);
      if (!ResourceByName(name).has_value()) {
        return Error(it->first, absl::StrCat("unknown limit \"", where, "\"", Suggest(name, names),
                                             "; the limits are ", absl::StrJoin(names, ", ")));
      }
      UlimitSpec limit{.name = name};
      const YAML::Node value = it->second;  // a copy, as in Requires()
      if (value.IsMap()) {
        if (!value["soft"] || !value["hard"] || value.size() != 2) {
          return Error(value, absl::StrCat("\"", where, "\" as a map is {soft: N, hard: N}, found ",
                                           Found(value)));
        }
        ASSIGN_OR_RETURN(limit.soft, UlimitValue(value["soft"], where + ".soft"));
        ASSIGN_OR_RETURN(limit.hard, UlimitValue(value["hard"], where + ".hard"));
        if (limit.soft > limit.hard) {
          return Error(
              value, absl::StrCat("\"", where, "\": soft is above hard, which setrlimit refuses"));
        }
      } else {
        ASSIGN_OR_RETURN(limit.soft, UlimitValue(value, where));
        limit.hard = limit.soft;
      }
      if (name == "memlock") {
        if (limit.soft != limit.hard) {
          return Error(value,
                       "\"runtime.ulimits.memlock\" takes one value: RDMA registration "
                       "needs the soft limit, so soft and hard are set alike");
        }
        std::optional<uint64_t>& memlock = recipe_.requirements.memlock_bytes;
        if (memlock.has_value() && *memlock != limit.soft) {
          return Error(value,
                       "\"runtime.ulimits.memlock\" differs from \"requires.memlock\"; "
                       "write it once");
        }
        memlock = limit.soft;
      }
      recipe_.ulimits.push_back(std::move(limit));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<MountSpec> Mount(const YAML::Node& node) {
    MountSpec mount;
    if (node.IsScalar()) {
      std::vector<std::string> parts = absl::StrSplit(node.Scalar(), ':');
      if (parts.size() < 2 || parts.size() > 3 ||
          (parts.size() == 3 && parts[2] != "ro" && parts[2] != "rw")) {
        return Error(node, absl::StrCat("a mount must be \"SOURCE:TARGET\" or "
                                        "\"SOURCE:TARGET:ro\", found ",
                                        Found(node)));
      }
      mount.source = parts[0];
      mount.target = parts[1];
      mount.read_only = parts.size() == 3 && parts[2] == "ro";
    } else if (node.IsMap()) {
      static const auto* kKeys = new std::vector<std::string>{"source", "target", "read_only"};
      for (auto it = node.begin(); it != node.end(); ++it) {
        const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
        key_mark_ = it->first.Mark();
        if (!Contains(*kKeys, key)) {
          return Error(it->first,
                       absl::StrCat("unknown mount key \"", key, "\"", Suggest(key, *kKeys)));
        }
        if (key == "read_only") {
          ASSIGN_OR_RETURN(mount.read_only, Bool(it->second, "read_only"));
        } else {
          ASSIGN_OR_RETURN(std::string path, String(it->second, key, false));
          (key == "source" ? mount.source : mount.target) = path;
        }
      }
    } else {
      return Error(node, absl::StrCat("a mount must be \"SOURCE:TARGET[:ro]\" or a map with "
                                      "source, target and read_only, found ",
                                      Found(node)));
    }
    // A relative source would make docker create a named volume instead of a bind mount.
    if (!absl::StartsWith(mount.source, "/") && !absl::StartsWith(mount.source, "~/")) {
      return Error(node, absl::StrCat("a mount source must be an absolute path or start with "
                                      "~/, found \"",
                                      mount.source, "\""));
    }
    if (!absl::StartsWith(mount.target, "/")) {
      return Error(node, absl::StrCat("a mount target must be an absolute path, found \"",
                                      mount.target, "\""));
    }
    return mount;
  }

  absl::Status Health(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node, absl::StrCat("\"health\" must be a map, found ", Found(node)));
    }
    static const auto* kKeys = new std::vector<std::string>{"path",
                                                            "port",
                                                            "check_models",
                                                            "check_completion",
                                                            "period",
                                                            "request_timeout",
                                                            "start_timeout",
                                                            "stall_timeout",
                                                            "signatures",
                                                            "watch_period",
                                                            "failure_threshold",
                                                            "idle_probe_after",
                                                            "idle_probe_timeout"};
    HealthSettings& h = recipe_.health;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      // A copy (a Node is a handle): yaml-cpp's operator-> returns a temporary proxy, so a
      // reference to it->second dangles at the end of this statement.
      const YAML::Node value = it->second;
      const std::string name = absl::StrCat("health.", key);
      key_mark_ = it->first.Mark();
      if (!Contains(*kKeys, key)) {
        return Error(it->first, absl::StrCat("unknown key \"", name, "\"", Suggest(key, *kKeys)));
      }
      if (key == "path") {
        ASSIGN_OR_RETURN(h.path, String(value, name, false));
        if (!absl::StartsWith(h.path, "/")) {
          return Error(value,
                       absl::StrCat("\"health.path\" must start with /, found ", Found(value)));
        }
      } else if (key == "port") {
        ASSIGN_OR_RETURN(int64_t port, Integer(value, name, 1, 65535));
        h.port = static_cast<uint32_t>(port);
      } else if (key == "check_models") {
        ASSIGN_OR_RETURN(h.check_models, Bool(value, name));
      } else if (key == "check_completion") {
        ASSIGN_OR_RETURN(h.check_completion, Bool(value, name));
      } else if (key == "signatures") {
        RETURN_IF_ERROR(Signatures(value));
      } else if (key == "failure_threshold") {
        ASSIGN_OR_RETURN(int64_t n, Integer(value, name, 1, 100));
        h.failure_threshold = static_cast<int>(n);
      } else {
        absl::Duration d;
        if (!value.IsScalar() || !absl::ParseDuration(value.Scalar(), &d) ||
            d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
          return Error(value, absl::StrCat("\"", name,
                                           "\" must be a positive duration such as "
                                           "\"100ms\", \"2s\" or \"30m\", found ",
                                           Found(value)));
        }
        if (key == "period") h.period = d;
        if (key == "request_timeout") h.request_timeout = d;
        if (key == "start_timeout") h.start_timeout = d;
        if (key == "stall_timeout") h.stall_timeout = d;
        if (key == "watch_period") h.watch_period = d;
        if (key == "idle_probe_after") h.idle_probe_after = d;
        if (key == "idle_probe_timeout") h.idle_probe_timeout = d;
      }
    }
    return absl::OkStatus();
  }

  // A positive, finite duration in absl's syntax ("5s", "300ms", "10m", "1h30m").
  absl::StatusOr<absl::Duration> Duration(const YAML::Node& value, absl::string_view name) const {
    absl::Duration d;
    if (!value.IsScalar() || !absl::ParseDuration(value.Scalar(), &d) ||
        d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
      return Error(value, absl::StrCat("\"", name,
                                       "\" must be a positive duration such as \"500ms\", "
                                       "\"5s\" or \"10m\", found ",
                                       Found(value)));
    }
    return d;
  }

  // `health.signatures`: a list of {pattern, count, window, action, fix}.
  absl::Status Signatures(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsSequence()) {
      return Error(node, absl::StrCat("\"health.signatures\" must be a list such as "
                                      "[{pattern: \"EngineDeadError\", action: restart}], found ",
                                      Found(node)));
    }
    static const auto* kKeys =
        new std::vector<std::string>{"pattern", "count", "window", "action", "fix"};
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string where = absl::StrCat("health.signatures[", i, "]");
      if (!item.IsMap()) {
        return Error(item, absl::StrCat("\"", where,
                                        "\" must be a map with pattern, count, window, action "
                                        "and fix, found ",
                                        Found(item)));
      }
      LogSignature signature;
      bool has_pattern = false;
      for (auto it = item.begin(); it != item.end(); ++it) {
        const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
        const YAML::Node value = it->second;  // a copy, as in Health()
        const std::string name = absl::StrCat(where, ".", key);
        key_mark_ = it->first.Mark();
        if (!Contains(*kKeys, key)) {
          return Error(it->first, absl::StrCat("unknown key \"", name, "\"", Suggest(key, *kKeys)));
        }
        if (key == "pattern") {
          ASSIGN_OR_RETURN(signature.pattern, String(value, name, false));
          try {
            std::regex check(signature.pattern);
          } catch (const std::regex_error& e) {
            return Error(value, absl::StrCat("\"", name,
                                             "\" is not a valid regular expression (ECMAScript): ",
                                             e.what(), "; escape special characters with \\"));
          }
          has_pattern = true;
        } else if (key == "count") {
          ASSIGN_OR_RETURN(int64_t count, Integer(value, name, 1, 1000));
          signature.count = static_cast<int>(count);
        } else if (key == "window") {
          ASSIGN_OR_RETURN(signature.window, Duration(value, name));
        } else if (key == "action") {
          ASSIGN_OR_RETURN(std::string action, String(value, name, false));
          if (action != "restart" && action != "fail") {
            return Error(value, absl::StrCat("\"", name, "\" must be restart or fail, found ",
                                             Found(value)));
          }
          signature.action = action == "fail" ? SignatureAction::kFail : SignatureAction::kRestart;
        } else if (key == "fix") {
          ASSIGN_OR_RETURN(signature.fix, String(value, name, false));
        }
      }
      if (!has_pattern) {
        return Error(item, absl::StrCat("\"", where,
                                        "\" needs a pattern, e.g. {pattern: \"EngineDeadError\"}"));
      }
      recipe_.health.signatures.push_back(std::move(signature));
    }
    return absl::OkStatus();
  }

  // `restart: {policy, initial_backoff, max_backoff, max_restarts, window}`.
  absl::Status Restart(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node, absl::StrCat("\"restart\" must be a map such as {policy: always, "
                                      "initial_backoff: 5s}, found ",
                                      Found(node)));
    }
    static const auto* kKeys = new std::vector<std::string>{
        "policy", "initial_backoff", "max_backoff", "max_restarts", "window"};
    RestartSettings& r = recipe_.restart;
    std::optional<YAML::Node> max_backoff_value;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      const YAML::Node value = it->second;  // a copy, as in Health()
      const std::string name = absl::StrCat("restart.", key);
      key_mark_ = it->first.Mark();
      if (!Contains(*kKeys, key)) {
        return Error(it->first, absl::StrCat("unknown key \"", name, "\"", Suggest(key, *kKeys)));
      }
      if (key == "policy") {
        ASSIGN_OR_RETURN(std::string policy, String(value, name, false));
        if (policy != "always" && policy != "never") {
          return Error(value, absl::StrCat("\"restart.policy\" must be always or never, found ",
                                           Found(value)));
        }
        r.always = policy == "always";
      } else if (key == "max_restarts") {
        ASSIGN_OR_RETURN(int64_t n, Integer(value, name, 0, 1000));
        r.max_restarts = static_cast<int>(n);
      } else if (key == "initial_backoff") {
        ASSIGN_OR_RETURN(r.initial_backoff, Duration(value, name));
      } else if (key == "max_backoff") {
        ASSIGN_OR_RETURN(r.max_backoff, Duration(value, name));
        max_backoff_value.emplace(value);
      } else if (key == "window") {
        ASSIGN_OR_RETURN(r.window, Duration(value, name));
      }
    }
    if (r.max_backoff < r.initial_backoff) {
      return Error(max_backoff_value.has_value() ? *max_backoff_value : node,
                   absl::StrCat("\"restart.max_backoff\" (", absl::FormatDuration(r.max_backoff),
                                ") is below \"restart.initial_backoff\" (",
                                absl::FormatDuration(r.initial_backoff), "); raise max_backoff"));
    }
    return absl::OkStatus();
  }

  // `rollout: {max_unavailable, drain_timeout}`.
  absl::Status Rollout(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node, absl::StrCat("\"rollout\" must be a map such as {max_unavailable: 1, "
                                      "drain_timeout: 60s}, found ",
                                      Found(node)));
    }
    static const auto* kKeys = new std::vector<std::string>{"max_unavailable", "drain_timeout"};
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      const YAML::Node value = it->second;  // a copy, as in Health()
      const std::string name = absl::StrCat("rollout.", key);
      key_mark_ = it->first.Mark();
      if (!Contains(*kKeys, key)) {
        return Error(it->first, absl::StrCat("unknown key \"", name, "\"", Suggest(key, *kKeys)));
      }
      if (key == "max_unavailable") {
        ASSIGN_OR_RETURN(int64_t n, Integer(value, name, 1, 1000));
        recipe_.rollout.max_unavailable = static_cast<int>(n);
      } else if (key == "drain_timeout") {
        ASSIGN_OR_RETURN(recipe_.rollout.drain_timeout, Duration(value, name));
      }
    }
    return absl::OkStatus();
  }

  // `router: {port}`.
  absl::Status Router(const YAML::Node& node) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(
          node, absl::StrCat("\"router\" must be a map such as {port: 8100}, found ", Found(node)));
    }
    static const auto* kKeys = new std::vector<std::string>{"port"};
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      const YAML::Node value = it->second;  // a copy, as in Health()
      key_mark_ = it->first.Mark();
      if (!Contains(*kKeys, key)) {
        return Error(it->first,
                     absl::StrCat("unknown key \"router.", key, "\"", Suggest(key, *kKeys)));
      }
      ASSIGN_OR_RETURN(int64_t port, Integer(value, "router.port", 1, 65535));
      recipe_.router.port = static_cast<uint32_t>(port);
    }
    return absl::OkStatus();
  }

  absl::Status Key(const std::string& key, const YAML::Node& value) {
    Recipe& r = recipe_;
    if (key == "recipe_version") return absl::OkStatus();
    if (key == "name") {
      ASSIGN_OR_RETURN(r.name, String(value, key, false));
    } else if (key == "description") {
      ASSIGN_OR_RETURN(r.description, String(value, key, true));
    } else if (key == "model") {
      ASSIGN_OR_RETURN(r.model, String(value, key, true));
    } else if (key == "container") {
      ASSIGN_OR_RETURN(r.container, String(value, key, true));
    } else if (key == "command") {
      ASSIGN_OR_RETURN(r.command, String(value, key, false));
      RecordCommandText(value);
    } else if (key == "mods") {
      ASSIGN_OR_RETURN(r.mods, StringList(value, key));
    } else if (key == "build_args") {
      ASSIGN_OR_RETURN(r.build_args, StringList(value, key));
    } else if (key == "defaults" || key == "env") {
      ASSIGN_OR_RETURN((key == "env" ? r.env : r.defaults), Values(value, key));
    } else if (key == "cluster_only") {
      ASSIGN_OR_RETURN(r.cluster_only, Bool(value, key));
    } else if (key == "solo_only") {
      ASSIGN_OR_RETURN(r.solo_only, Bool(value, key));
    } else if (key == "engine") {
      ASSIGN_OR_RETURN(r.engine, String(value, key, false));
      if (!Contains(KnownEngines(), r.engine)) {
        return Error(value, absl::StrCat("unknown engine \"", r.engine, "\"",
                                         Suggest(r.engine, KnownEngines()),
                                         " (engines: ", absl::StrJoin(KnownEngines(), ", "), ")"));
      }
    } else if (key == "nodes") {
      ASSIGN_OR_RETURN(int64_t nodes, Integer(value, key, 1, std::numeric_limits<int>::max()));
      r.nodes = static_cast<int>(nodes);
    } else if (key == "replicas") {
      ASSIGN_OR_RETURN(int64_t replicas, Integer(value, key, 1, std::numeric_limits<int>::max()));
      r.replicas = static_cast<int>(replicas);
    } else if (key == "placement") {
      if (value.IsMap()) {
        return Error(value,
                     "\"placement\" is a list of node names, head first, e.g. "
                     "placement: [spark-1, spark-2]; found a map");
      }
      ASSIGN_OR_RETURN(r.placement, StringList(value, key));
      std::set<std::string> seen;
      for (size_t i = 0; i < r.placement.size(); ++i) {
        if (!seen.insert(r.placement[i]).second) {
          return Error(value[i], absl::StrCat("node \"", r.placement[i],
                                              "\" is listed twice in \"placement\""));
        }
      }
    } else if (key == "runtime") {
      return Runtime(value);
    } else if (key == "requires") {
      return Requires(value);
    } else if (key == "mounts") {
      if (value.IsNull()) return absl::OkStatus();
      if (!value.IsSequence()) {
        return Error(value, absl::StrCat("\"mounts\" must be a list, found ", Found(value)));
      }
      for (const YAML::Node& item : value) {
        ASSIGN_OR_RETURN(MountSpec mount, Mount(item));
        r.mounts.push_back(std::move(mount));
      }
    } else if (key == "cache_dirs") {
      ASSIGN_OR_RETURN(r.cache_dirs, StringList(value, key));
      for (size_t i = 0; i < r.cache_dirs.size(); ++i) {
        if (!absl::StartsWith(r.cache_dirs[i], "/")) {
          return Error(value[i], absl::StrCat("\"cache_dirs\" holds container paths, which are "
                                              "absolute; found \"",
                                              r.cache_dirs[i], "\""));
        }
      }
    } else if (key == "health") {
      return Health(value);
    } else if (key == "restart") {
      return Restart(value);
    } else if (key == "rollout") {
      return Rollout(value);
    } else if (key == "router") {
      return Router(value);
    }
    return absl::OkStatus();
  }

  // Checks that need the whole file: required keys, the runtime, the command's syntax.
  absl::Status Finish(const YAML::Node& root) {
    Recipe& r = recipe_;
    auto missing = [&](absl::string_view key, absl::string_view why) {
      return Error(root, absl::StrCat("missing required key \"", key, "\"", why));
    };
    if (r.locations.count("name") == 0) return missing("name", "");
    if (r.locations.count("command") == 0) {
      return missing("command", " (the program and its arguments, with {placeholders})");
    }
    if (r.version == 1) {
      if (r.container.empty()) return missing("container", " (the image the command runs in)");
      r.runtime = RuntimeKind::kDocker;
    } else if (r.locations.count("runtime") == 0) {
      r.runtime = r.container.empty() ? RuntimeKind::kProcess : RuntimeKind::kDocker;
    } else if (r.runtime == RuntimeKind::kDocker && r.container.empty()) {
      return Error(nodes_.at("runtime"),
                   "runtime docker needs \"container\" (the image); set it, or use runtime: "
                   "process");
    } else if (r.runtime == RuntimeKind::kProcess && !r.container.empty()) {
      return Error(nodes_.at("runtime"),
                   "runtime process runs no image, but \"container\" is set; remove one");
    }
    if (r.cluster_only && r.solo_only) {
      return Error(nodes_.at("solo_only"),
                   "cluster_only and solo_only are both true; a recipe can be only one");
    }
    return internal::ParseCommandTemplate(r).status();
  }

  absl::string_view source_;
  Recipe& recipe_;
  // Every top-level value by key, for checks that span keys.
  std::map<std::string, YAML::Node> nodes_;
  // Where the key whose value is being read was written: implicit nulls are reported there.
  YAML::Mark key_mark_;
};

}  // namespace

absl::Status CheckUtf8(absl::string_view path, absl::string_view text) {
  const size_t bad = FirstInvalidUtf8(text);
  if (bad == absl::string_view::npos) return absl::OkStatus();
  const absl::string_view before = text.substr(0, bad);
  const size_t line_start = before.rfind('\n');
  const size_t line = std::count(before.begin(), before.end(), '\n') + 1;
  const size_t column = line_start == absl::string_view::npos ? bad + 1 : bad - line_start;
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s:%d:%d: the file is not valid UTF-8 (byte 0x%02X); save it as UTF-8 (e.g. `iconv -f "
      "latin1 -t utf-8`)",
      path, line, column, static_cast<unsigned char>(text[bad])));
}

absl::StatusOr<Override> ParseOverride(absl::string_view text) {
  RETURN_IF_ERROR(CheckUtf8("override", text));
  size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("an override is KEY=VALUE, e.g. -o max_num_seqs=8; found \"", text, "\""));
  }
  absl::string_view key = text.substr(0, eq);
  for (char c : key) {
    if (absl::ascii_isspace(c) || c == '{' || c == '}') {
      return absl::InvalidArgumentError(
          absl::StrCat("override key \"", key, "\" cannot hold spaces or braces; write KEY=VALUE"));
    }
  }
  return Override{std::string(key), std::string(text.substr(eq + 1))};
}

absl::StatusOr<Recipe> ParseRecipe(absl::string_view path, absl::string_view yaml) {
  RETURN_IF_ERROR(CheckUtf8(path, yaml));
  Recipe recipe;
  recipe.path = std::string(path);
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    RETURN_IF_ERROR(Parser(yaml, &recipe).Parse(root));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", std::max(e.mark.line, 0) + 1, ":",
                                                   std::max(e.mark.column, 0) + 1,
                                                   ": bad YAML: ", e.msg));
  }
  return recipe;
}

absl::StatusOr<Recipe> LoadRecipe(const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, ReadFileToString(path));
  return ParseRecipe(path, contents);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> EffectiveValues(
    const Recipe& recipe, const std::vector<Override>& overrides) {
  ASSIGN_OR_RETURN(std::vector<internal::TemplatePiece> pieces,
                   internal::ParseCommandTemplate(recipe));
  std::vector<std::string> known;
  for (const auto& [key, value] : recipe.defaults) known.push_back(key);
  for (const internal::TemplatePiece& piece : pieces) {
    if (piece.is_field && !Contains(known, piece.text)) known.push_back(piece.text);
  }
  // Python's {**defaults, **overrides}: a replaced key keeps its place, a new one goes last.
  std::vector<std::pair<std::string, std::string>> values = recipe.defaults;
  for (const Override& o : overrides) {
    auto it = std::find_if(values.begin(), values.end(),
                           [&](const auto& entry) { return entry.first == o.key; });
    if (it != values.end()) {
      it->second = o.value;
    } else if (Contains(known, o.key)) {
      values.emplace_back(o.key, o.value);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "override ", o.key, "=", o.value, ": recipe ", recipe.path, " has no value \"", o.key,
          "\" in its defaults or its command", Suggest(o.key, known)));
    }
  }
  return values;
}

absl::StatusOr<int> GroupSize(const Recipe& recipe,
                              const std::vector<std::pair<std::string, std::string>>& values) {
  // The last entry wins, as in RenderCommand; an absent value means 1, as in vLLM.
  auto factor = [&](const std::string& name) -> absl::StatusOr<int> {
    const std::string* text = nullptr;
    for (const auto& [key, value] : values) {
      if (key == name) text = &value;
    }
    if (text == nullptr) return 1;
    int n = 0;
    if (!absl::SimpleAtoi(*text, &n) || n < 1 || n > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(recipe, absl::StrCat("defaults.", name)), "\"", name,
                       "\" must be a positive integer, found \"", *text, "\""));
    }
    return n;
  };
  ASSIGN_OR_RETURN(int tp, factor("tensor_parallel"));
  ASSIGN_OR_RETURN(int pp, factor("pipeline_parallel"));
  if (recipe.solo_only) {
    if (recipe.nodes.has_value() && *recipe.nodes != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(recipe, "nodes"), "a solo_only recipe runs on 1 node, but nodes is ",
                       *recipe.nodes));
    }
    if (tp * pp != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          Where(recipe, "solo_only"), "a solo_only recipe runs on 1 node, but tensor_parallel ", tp,
          " x pipeline_parallel ", pp, " needs ", tp * pp, "; override tensor_parallel=1"));
    }
    return 1;
  }
  int size = recipe.nodes.value_or(tp * pp);
  if (recipe.cluster_only && size < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        Where(recipe, "cluster_only"), "a cluster_only recipe needs at least 2 nodes, but ",
        recipe.nodes.has_value() ? "nodes is " : "tensor_parallel x pipeline_parallel is ", size));
  }
  return size;
}

std::string Where(const Recipe& recipe, absl::string_view key) {
  auto it = recipe.locations.find(std::string(key));
  if (it == recipe.locations.end() || it->second.line == 0) return absl::StrCat(recipe.path, ": ");
  return absl::StrCat(recipe.path, ":", it->second.line, ":", it->second.column, ": ");
}

}  // namespace fleet::engine
