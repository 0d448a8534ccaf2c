// The table of engine adapters: `engine:` names to the adapter that renders them.
#include <algorithm>
#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "launch/adapters/adapter.h"
#include "launch/adapters/exec.h"
#include "launch/adapters/llamacpp.h"
#include "launch/adapters/native.h"
#include "launch/adapters/vllm.h"

namespace fleet::engine {
namespace {

// Adapters are stateless, so one instance of each serves every caller for the process's life.
const std::array<const EngineAdapter*, 4>& Adapters() {
  static const auto* const adapters = new std::array<const EngineAdapter*, 4>{
      new ExecAdapter(), new LlamaCppAdapter(), new NativeAdapter(), new VllmAdapter()};
  return *adapters;
}

}  // namespace

absl::StatusOr<const EngineAdapter*> FindAdapter(absl::string_view engine) {
  for (const EngineAdapter* adapter : Adapters()) {
    if (adapter->name() == engine) return adapter;
  }
  return absl::NotFoundError(absl::StrCat("unknown engine \"", engine,
                                          "\": the engines SparkFleet knows are ",
                                          absl::StrJoin(AdapterNames(), ", ")));
}

void AddNote(std::vector<std::string>* notes, std::string note) {
  if (notes == nullptr) return;
  if (std::find(notes->begin(), notes->end(), note) == notes->end()) {
    notes->push_back(std::move(note));
  }
}

absl::string_view LaunchOrderName(LaunchOrder order) {
  switch (order) {
    case LaunchOrder::kHeadFirst:
      return "head-first";
    case LaunchOrder::kAllAtOnce:
      return "all-at-once";
    case LaunchOrder::kWorkersFirst:
      return "workers-first";
  }
  return "unknown";
}

std::vector<std::string> AdapterNames() {
  std::vector<std::string> names;
  for (const EngineAdapter* adapter : Adapters()) names.emplace_back(adapter->name());
  return names;
}

}  // namespace fleet::engine
