// JSON and YAML text of the CLI's documents.
#include "cli/document.h"

#include "absl/strings/str_cat.h"
#include "common/utf8.h"
#include "yaml-cpp/yaml.h"

namespace fleet::cli {
namespace {

using Json = nlohmann::ordered_json;

void Emit(YAML::Emitter& out, const Json& v) {
  if (v.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [key, value] : v.items()) {
      out << YAML::Key << SanitizeUtf8(key) << YAML::Value;
      Emit(out, value);
    }
    out << YAML::EndMap;
  } else if (v.is_array()) {
    out << YAML::BeginSeq;
    for (const auto& e : v) Emit(out, e);
    out << YAML::EndSeq;
  } else if (v.is_string()) {
    // yaml-cpp writes nothing after a string that is not UTF-8 (the emitter goes bad).
    out << SanitizeUtf8(v.get<std::string>());
  } else if (v.is_boolean()) {
    out << v.get<bool>();
  } else if (v.is_number_unsigned()) {
    out << v.get<uint64_t>();
  } else if (v.is_number_integer()) {
    out << v.get<int64_t>();
  } else if (v.is_number_float()) {
    out << v.get<double>();
  } else {
    out << YAML::Null;
  }
}

}  // namespace

std::string JsonToYaml(const Json& doc) {
  YAML::Emitter out;
  out.SetDoublePrecision(6);
  Emit(out, doc);
  return absl::StrCat(out.c_str(), "\n");
}

std::string DumpJson(const Json& doc) {
  // A recipe, a log line or an engine can put any bytes into a string; invalid UTF-8 is
  // printed as U+FFFD instead of throwing (nlohmann's type_error 316).
  return doc.dump(2, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace) + "\n";
}

std::string PrintDocument(const Json& doc, const std::string& format) {
  if (format == "yaml") return JsonToYaml(doc);
  return DumpJson(doc);
}

}  // namespace fleet::cli
