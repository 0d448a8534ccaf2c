// `fleet export`: parses the recipe and flags at the edge, then calls the pure exporters.
#include "cli/export_commands.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/files.h"
#include "launch/export/export.h"

namespace fleet::cli {

int Export(const ExportFlags& flags) {
  if (flags.format != "lws" && flags.format != "slurm") {
    return Fail(absl::StrCat("--format ", flags.format, " is not known; use lws or slurm"));
  }
  if (flags.nodes.has_value() && *flags.nodes < 1) {
    return Fail(absl::StrCat("--nodes ", *flags.nodes, " must be at least 1"));
  }
  absl::StatusOr<std::string> yaml = ReadFileToString(flags.recipe);
  if (!yaml.ok()) return Fail(std::string(yaml.status().message()));
  absl::StatusOr<engine::Recipe> recipe = engine::ParseRecipe(flags.recipe, *yaml);
  if (!recipe.ok()) return Fail(std::string(recipe.status().message()));

  engine::ExportOptions options;
  for (const std::string& text : flags.o) {
    absl::StatusOr<engine::Override> o = engine::ParseOverride(text);
    if (!o.ok()) return Fail(std::string(o.status().message()));
    options.overrides.push_back(*o);
  }
  options.group = flags.name;
  if (options.group.empty()) {
    std::string base = flags.recipe.substr(flags.recipe.rfind('/') + 1);
    options.group = base.substr(0, base.find('.'));
  }
  options.nodes = flags.nodes;
  options.fabric_interface = flags.fabric_interface;
  options.rdma_devices = absl::StrSplit(flags.rdma_devices, ',', absl::SkipEmpty());
  options.gpus_per_node = flags.gpus_per_node;
  options.master_port = flags.master_port;
  if (flags.rdma == "host-network") {
    options.rdma = engine::RdmaAccess::kHostNetwork;
  } else if (flags.rdma == "device-plugin") {
    options.rdma = engine::RdmaAccess::kDevicePlugin;
  } else {
    return Fail(absl::StrCat("--rdma ", flags.rdma,
                             " is not known; use host-network or "
                             "device-plugin"));
  }
  options.rdma_resource = flags.rdma_resource;
  options.image = flags.image;
  options.k8s_namespace = flags.k8s_namespace;
  options.max_unavailable = flags.max_unavailable;
  options.partition = flags.partition;
  options.time_limit = flags.time_limit;

  absl::StatusOr<engine::Export> exported = flags.format == "lws"
                                                ? engine::ExportLeaderWorkerSet(*recipe, options)
                                                : engine::ExportSlurm(*recipe, options);
  if (!exported.ok()) return Fail(std::string(exported.status().message()));
  for (const std::string& note : exported->notes) std::cerr << "note: " << note << "\n";
  std::cout << exported->text;
  return 0;
}

}  // namespace fleet::cli
