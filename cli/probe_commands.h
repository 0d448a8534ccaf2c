// The `fleet` commands that show what nodes are made of and whether a recipe can launch on
// them: probe (this machine, no agent), describe node, get links, preflight.
#pragma once

#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/group_commands.h"
#include "fleet/v1/controller.pb.h"
#include "fleet/v1/probe.pb.h"

namespace fleet::cli {

// `fleet probe [--root DIR]`: every probe of this machine (or of a recorded tree: then only
// its files are read, and what needs the live system is reported unavailable).
int Probe(const Globals& g, const std::string& root);
int DescribeNode(const Globals& g, const std::string& name);
// One row per RDMA port of every Ready node: node, device, port, state, rate, MTU, netdev,
// address, RoCE v2 GID.
int GetLinks(const Globals& g);
// `fleet preflight RECIPE`: one row per node and check; exit 1 on any failure.
int Preflight(const Globals& g, const RecipeFlags& flags, bool force);

// A probe as sections of tables (RDMA, interfaces, GPU, NCCL, limits, disks, images, models,
// unavailable).
std::string RenderProbe(const v1::NodeProbe& probe);
// NODE CHECK VERDICT OBSERVED EXPECTED FIX.
std::string RenderPreflight(const google::protobuf::RepeatedPtrField<v1::PreflightRow>& rows);

}  // namespace fleet::cli
