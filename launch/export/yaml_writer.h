// Block-style YAML of a JSON value, for Kubernetes manifests a person reads: keys in insertion
// order, every string double-quoted (so "1", "true" or "0.85" stay strings, as the API types
// require), numbers and booleans plain.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace fleet::engine {

using OrderedJson = nlohmann::ordered_json;

// Example: WriteYaml({{"a", 1}, {"b", {"x"}}}) == "a: 1\nb:\n  - \"x\"\n".
std::string WriteYaml(const OrderedJson& value);

}  // namespace fleet::engine
