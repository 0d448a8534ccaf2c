// `fleet bench URL|GROUP`: the prefill/decode table at each depth and concurrency, against any
// OpenAI-compatible endpoint or a group's (resolved through the controller).
#pragma once

#include <string>

#include "cli/commands.h"

namespace fleet::cli {

struct BenchFlags {
  std::string target;  // http://host:port[/v1] or a group name
  int pp = 2048;
  int tg = 128;
  std::string depth = "0,4096,8192";
  std::string concurrency = "1,2,4";
  int runs = 3;
  std::string model;
  bool chat = false;
  std::string plot;  // FILE.svg
  std::string timeout = "5m";
  std::string deadline = "1h";
};

// Runs the sweep and prints it as g.output says (table, json, yaml); Ctrl-C prints what was
// measured. Exit 0 when every row has figures and no row has an error, 1 otherwise.
int Bench(const Globals& g, const BenchFlags& flags);

}  // namespace fleet::cli
