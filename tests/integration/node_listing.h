// Reading `fleet nodes -o json` in integration tests: find a node, tell its state, summarise a
// listing for a failure message, and poll until a listing satisfies a condition.

#ifndef FLEET_TESTS_INTEGRATION_NODE_LISTING_H_
#define FLEET_TESTS_INTEGRATION_NODE_LISTING_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"

namespace fleet::testing {

// The node called `name` in a `fleet nodes -o json` document, or nullptr.
inline const nlohmann::json* FindNode(const nlohmann::json& doc, absl::string_view name) {
  for (const nlohmann::json& item : doc["items"]) {
    if (item.value("name", "") == name) return &item;
  }
  return nullptr;
}

// The node's state, or "(not listed)".
inline std::string StateOf(const nlohmann::json& doc, absl::string_view name) {
  const nlohmann::json* node = FindNode(doc, name);
  return node == nullptr ? "(not listed)" : node->value("state", "(no state)");
}

// "node-1=Ready(id) node-2=Lost(id) ...", for failure messages.
inline std::string Summary(const nlohmann::json& doc) {
  std::string out;
  for (const nlohmann::json& item : doc["items"]) {
    absl::StrAppend(&out, out.empty() ? "" : " ", item.value("name", "?"), "=",
                    item.value("state", "?"), "(", item.value("id", "?"), ")");
  }
  return out.empty() ? "(no nodes)" : out;
}

// The names node-1 .. node-`count`, as TestCluster names its agents.
inline std::vector<std::string> AgentNames(int count) {
  std::vector<std::string> names;
  for (int i = 1; i <= count; ++i) names.push_back(TestCluster::AgentName(i));
  return names;
}

inline bool AllReady(const nlohmann::json& doc, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (StateOf(doc, name) != "Ready") return false;
  }
  return true;
}

// Polls `fleet nodes -o json` every 100 ms until `done` holds for a listing. The failure message
// carries the last listing, or the last error; `last_doc` gets the last listing.
inline ::testing::AssertionResult WaitForNodes(
    const TestCluster& cluster, const std::function<bool(const nlohmann::json&)>& done,
    absl::Duration timeout, nlohmann::json* last_doc = nullptr) {
  std::string last = "no listing yet";
  nlohmann::json doc;
  bool ok = TestCluster::WaitFor(
      [&] {
        absl::StatusOr<nlohmann::json> nodes = cluster.Nodes();
        if (!nodes.ok()) {
          last = nodes.status().ToString();
          return false;
        }
        doc = *std::move(nodes);
        last = Summary(doc);
        return done(doc);
      },
      timeout);
  if (last_doc != nullptr) *last_doc = doc;
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "not reached within " << absl::FormatDuration(timeout) << "; last listing: " << last;
}

}  // namespace fleet::testing

#endif  // FLEET_TESTS_INTEGRATION_NODE_LISTING_H_
