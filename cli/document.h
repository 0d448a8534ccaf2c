// The CLI's documents as text: `-o json` and `-o yaml` print the same document. Apart from
// output.h so the recipe fuzz target prints plans through these exact functions without the
// controller's protocol.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace fleet::cli {

// `doc` as indented JSON and a newline; strings that are not UTF-8 are printed with U+FFFD.
std::string DumpJson(const nlohmann::ordered_json& doc);

// The same document in YAML (block style, keys in the JSON's order); strings that are not
// UTF-8 are printed with U+FFFD.
std::string JsonToYaml(const nlohmann::ordered_json& doc);

// `doc` as "json" (indented) or "yaml", with a final newline.
std::string PrintDocument(const nlohmann::ordered_json& doc, const std::string& format);

}  // namespace fleet::cli
