// WriteYaml: a recursive block emitter; JSON's string escapes are valid in YAML double quotes.
#include "launch/export/yaml_writer.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace fleet::engine {
namespace {

bool IsLeaf(const OrderedJson& v) { return !(v.is_object() || v.is_array()) || v.empty(); }

std::string Leaf(const OrderedJson& v) {
  if (v.is_object()) return "{}";
  if (v.is_array()) return "[]";
  return v.dump();
}

// Kubernetes keys ("leaderworkerset.sigs.k8s.io/name", "nvidia.com/gpu") are plain; anything
// else is quoted.
std::string Key(const std::string& key) {
  bool plain = !key.empty() && absl::ascii_isalpha(key[0]);
  for (char c : key) {
    plain = plain && (absl::ascii_isalnum(c) || c == '.' || c == '/' || c == '-' || c == '_');
  }
  return plain ? key : OrderedJson(key).dump();
}

void Write(const OrderedJson& v, int indent, std::string* out) {
  const std::string pad(indent, ' ');
  if (v.is_object()) {
    for (const auto& [key, item] : v.items()) {
      absl::StrAppend(out, pad, Key(key), ":");
      if (IsLeaf(item)) {
        absl::StrAppend(out, " ", Leaf(item), "\n");
      } else {
        absl::StrAppend(out, "\n");
        Write(item, indent + 2, out);
      }
    }
    return;
  }
  for (const OrderedJson& item : v) {
    if (IsLeaf(item)) {
      absl::StrAppend(out, pad, "- ", Leaf(item), "\n");
    } else {
      // The item's first line goes after the dash: "- name: x" rather than "-\n  name: x".
      std::string nested;
      Write(item, indent + 2, &nested);
      absl::StrAppend(out, pad, "- ", nested.substr(indent + 2));
    }
  }
}

}  // namespace

std::string WriteYaml(const OrderedJson& value) {
  if (IsLeaf(value)) return absl::StrCat(Leaf(value), "\n");
  std::string out;
  Write(value, 0, &out);
  return out;
}

}  // namespace fleet::engine
