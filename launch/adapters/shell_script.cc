// Shell-script commands: recognising them, the variables their ranks read, their master port.
#include "launch/adapters/shell_script.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fleet::engine {

std::optional<std::string> ShellScriptOf(const std::vector<std::string>& command) {
  if (command.size() < 3) return std::nullopt;
  absl::string_view shell = command[0];
  if (size_t slash = shell.rfind('/'); slash != absl::string_view::npos) {
    shell.remove_prefix(slash + 1);
  }
  if (shell != "sh" && shell != "bash" && shell != "dash" && shell != "zsh") return std::nullopt;
  // Options before the script: "-c" alone or grouped ("-lc"), possibly after others ("-l -c").
  for (size_t i = 1; i + 1 < command.size(); ++i) {
    absl::string_view word = command[i];
    if (!absl::StartsWith(word, "-") || absl::StartsWith(word, "--")) return std::nullopt;
    if (absl::StrContains(word, 'c')) return command[i + 1];
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> ScriptRankEnv(const GroupContext& group,
                                                               int rank) {
  return {
      {"NODE_RANK", absl::StrCat(rank)},
      {"NNODES", absl::StrCat(group.nodes.size())},
      {"HEADLESS", rank > 0 ? "1" : ""},
  };
}

absl::StatusOr<std::optional<int>> ScriptMasterPort(const std::string& script) {
  std::vector<absl::string_view> words =
      absl::StrSplit(script, absl::ByAnyChar(" \t\n\\"), absl::SkipEmpty());
  std::optional<int> port;
  int named = 0;
  for (size_t i = 0; i < words.size(); ++i) {
    absl::string_view word = words[i];
    absl::string_view value;
    if (absl::ConsumePrefix(&word, "--master-port=") ||
        absl::ConsumePrefix(&word, "--master_port=")) {
      value = word;
    } else if ((word == "--master-port" || word == "--master_port") && i + 1 < words.size()) {
      value = words[++i];
    } else {
      continue;
    }
    ++named;
    value = absl::StripSuffix(absl::StripPrefix(value, "\""), "\"");
    int number = 0;
    if (absl::SimpleAtoi(value, &number) && number > 0 && number <= 65535) {
      port = number;
    } else if (!absl::StartsWith(value, "$")) {
      return absl::InvalidArgumentError(
          absl::StrCat("the script's --master-port is \"", value,
                       "\": write a port number (e.g. 25000) or ${MASTER_PORT}"));
    }
  }
  if (named > 1) {
    return absl::InvalidArgumentError(
        "the script names --master-port more than once: name it once, as a number or as "
        "${MASTER_PORT}");
  }
  return port;
}

}  // namespace fleet::engine
