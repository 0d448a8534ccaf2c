// The agent's stable node id.
#include "agent/session/identity.h"

#include <unistd.h>

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace fleet::agent {
namespace {

bool IsNodeId(absl::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!absl::ascii_isxdigit(c) || absl::ascii_isupper(c)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<v1::NodeIdentity> LoadOrCreateIdentity(const std::string& state_dir,
                                                      const std::string& name) {
  RETURN_IF_ERROR(MakeDirectories(state_dir, 0700));
  std::string path = absl::StrCat(state_dir, "/node_id");
  v1::NodeIdentity identity;
  absl::StatusOr<std::string> stored = ReadFileToString(path);
  if (stored.ok()) {
    std::string id(absl::StripAsciiWhitespace(*stored));
    if (!IsNodeId(id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path,
          " does not hold a node id (32 lower-case hex digits); restore it, or delete it "
          "to join as a new node (then `fleet node remove` the old one)"));
    }
    identity.set_node_id(id);
  } else if (absl::IsNotFound(stored.status())) {
    std::random_device rd;
    std::string id = absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
    RETURN_IF_ERROR(WriteFileAtomically(path, id + "\n", 0600));
    identity.set_node_id(id);
  } else {
    return stored.status();
  }
  std::string node_name = name;
  if (node_name.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) return ErrnoStatus("gethostname");
    node_name = host;
  }
  identity.set_name(node_name);
  return identity;
}

}  // namespace fleet::agent
