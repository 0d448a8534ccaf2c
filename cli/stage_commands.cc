// `fleet stage`: request, progress, table and JSON.
#include "cli/stage_commands.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "cli/document.h"
#include "common/table.h"

namespace fleet::cli {
namespace {

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f B", b) : absl::StrFormat("%.1f %s", b, units[u]);
}

const v1::StageNodeResult* Find(const v1::StageRun* run, const std::string& node) {
  if (run == nullptr) return nullptr;
  for (const v1::StageNodeResult& n : run->nodes()) {
    if (n.node() == node) return &n;
  }
  return nullptr;
}

int ExitCode(const v1::StageRun& run) { return run.state() == "done" ? 0 : 1; }

}  // namespace

nlohmann::ordered_json StageRunJson(const v1::StageRun& run) {
  if (run.kind() == "image") {
    nlohmann::ordered_json o = {
        {"apiVersion", "fleet/v1"}, {"kind", "StageRun"},     {"stage", "image"},
        {"id", run.id()},           {"source", run.source()}, {"from", run.from()},
        {"state", run.state()},     {"error", run.error()},   {"seconds", run.seconds()}};
    o["nodes"] = nlohmann::ordered_json::array();
    for (const v1::StageNodeResult& n : run.nodes()) {
      o["nodes"].push_back({{"node", n.node()},
                            {"image_id", n.image_id()},
                            {"skipped", n.skipped()},
                            {"bytes_sent", n.bytes_sent()},
                            {"seconds", n.seconds()},
                            {"bytes_done", n.bytes_done()},
                            {"bytes_needed", n.bytes_needed()},
                            {"state", n.state()},
                            {"error", n.error()}});
    }
    return o;
  }
  nlohmann::ordered_json o = {
      {"apiVersion", "fleet/v1"}, {"kind", "StageRun"},     {"id", run.id()},
      {"source", run.source()},   {"from", run.from()},     {"state", run.state()},
      {"error", run.error()},     {"rounds", run.rounds()}, {"seconds", run.seconds()}};
  o["nodes"] = nlohmann::ordered_json::array();
  for (const v1::StageNodeResult& n : run.nodes()) {
    o["nodes"].push_back({{"node", n.node()},
                          {"dest", n.dest()},
                          {"files", n.files()},
                          {"bytes", n.bytes()},
                          {"bytes_sent", n.bytes_sent()},
                          {"seconds", n.seconds()},
                          {"tree_sha256", n.tree_sha256()},
                          {"chunks_rejected", n.chunks_rejected()},
                          {"bytes_done", n.bytes_done()},
                          {"bytes_needed", n.bytes_needed()},
                          {"state", n.state()},
                          {"error", n.error()}});
  }
  return o;
}

std::string RenderStageRun(const v1::StageRun& run) {
  if (run.kind() == "image") {
    Table t({"NODE", "STATE", "IMAGE ID", "SENT", "SECONDS", "NOTE/ERROR"});
    for (const v1::StageNodeResult& n : run.nodes()) {
      t.AddRow({n.node(), n.state(), n.image_id().empty() ? "-" : n.image_id().substr(0, 19),
                Bytes(static_cast<double>(n.bytes_sent())), absl::StrFormat("%.1f", n.seconds()),
                !n.error().empty() ? n.error()
                : n.skipped()      ? "had it already"
                                   : "-"});
    }
    std::string out = absl::StrCat("staging image ", run.source(), " from ",
                                   run.from().empty() ? "?" : run.from(), ": ", run.state(), " in ",
                                   absl::StrFormat("%.1f", run.seconds()), " s\n");
    absl::StrAppend(&out, t.Render());
    if (!run.error().empty()) absl::StrAppend(&out, "error: ", run.error(), "\n");
    return out;
  }
  Table t({"NODE", "STATE", "DEST", "FILES", "SIZE", "SENT", "SECONDS", "REJECTED", "TREE/ERROR"});
  for (const v1::StageNodeResult& n : run.nodes()) {
    t.AddRow({n.node(), n.state(), n.dest().empty() ? "-" : n.dest(), absl::StrCat(n.files()),
              Bytes(static_cast<double>(n.bytes())), Bytes(static_cast<double>(n.bytes_sent())),
              absl::StrFormat("%.1f", n.seconds()), absl::StrCat(n.chunks_rejected()),
              !n.error().empty()        ? n.error()
              : n.tree_sha256().empty() ? "-"
                                        : n.tree_sha256().substr(0, 16)});
  }
  std::string out =
      absl::StrCat("staging ", run.source(), " from ", run.from().empty() ? "?" : run.from(), ": ",
                   run.state(), " in ", absl::StrFormat("%.1f", run.seconds()), " s (",
                   run.rounds(), run.rounds() == 1 ? " round" : " rounds", ")\n");
  absl::StrAppend(&out, t.Render());
  if (!run.error().empty()) absl::StrAppend(&out, "error: ", run.error(), "\n");
  return out;
}

std::string RenderStageProgress(const v1::StageRun& run, const v1::StageRun* previous,
                                double interval_seconds) {
  std::string out;
  for (const v1::StageNodeResult& n : run.nodes()) {
    const v1::StageNodeResult* before = Find(previous, n.node());
    double rate = 0;
    if (before != nullptr && interval_seconds > 0 && n.bytes_done() >= before->bytes_done()) {
      rate = static_cast<double>(n.bytes_done() - before->bytes_done()) / interval_seconds;
    }
    const uint64_t left = n.bytes_needed() > n.bytes_done() ? n.bytes_needed() - n.bytes_done() : 0;
    std::string eta =
        rate > 0 ? absl::StrFormat("ETA %.0fs", static_cast<double>(left) / rate) : "ETA -";
    absl::StrAppend(
        &out, absl::StrFormat("%-12s %-8s %10s / %-10s %10s/s  %s\n", n.node(), n.state(),
                              Bytes(static_cast<double>(n.bytes_done())),
                              Bytes(static_cast<double>(n.bytes_needed())), Bytes(rate), eta));
  }
  return out;
}

namespace {

// Runs `call` (the blocking staging RPC) while a second connection redraws the controller's
// progress twice a second on a terminal; then prints the run. `call` answers the run. Ctrl-C
// (or SIGTERM) cancels the run at the controller as `fleet stage cancel` does, and the run is
// printed as it ended; a second Ctrl-C leaves at once (exit 130).
int RunWithProgress(const Globals& g,
                    const std::function<absl::StatusOr<v1::StageRun>(AdminClient&)>& call) {
  // Blocked before any thread exists (gRPC's included), so only the wait below takes them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<AdminClient> watcher = Connect(g);
  if (!watcher.ok()) return Fail(std::string(watcher.status().message()));

  absl::StatusOr<v1::StageRun> response = absl::UnknownError("not run");
  absl::Notification done;
  std::thread caller([&] {
    response = call(*client);
    done.Notify();
  });
  // Live progress only on a terminal; the status is the controller's, read twice a second.
  const bool terminal = ::isatty(STDERR_FILENO) == 1;
  std::optional<v1::StageRun> previous;
  size_t lines = 0;
  bool cancelling = false;
  const absl::Duration every = absl::Milliseconds(500);
  absl::Time next_draw = absl::Now() + every;
  while (!done.HasBeenNotified()) {
    const timespec tick{.tv_sec = 0, .tv_nsec = 100'000'000};
    if (sigtimedwait(&stop, nullptr, &tick) > 0) {
      if (cancelling) {
        std::cerr << "fleet: stopped waiting; `fleet stage status` shows how the run ended\n";
        std::_Exit(130);
      }
      cancelling = true;
      std::cerr << "\nfleet: cancelling the stage run (Ctrl-C again to stop waiting) ...\n";
      lines = 0;
      // The run may have ended meanwhile ("no stage run in flight"): the caller returns then.
      (void)watcher->StageCancel();
      continue;
    }
    if (!terminal || cancelling || absl::Now() < next_draw) continue;
    next_draw = absl::Now() + every;
    absl::StatusOr<v1::StageStatusResponse> status = watcher->StageStatus();
    if (!status.ok() || !status->has_run() || status->run().state() != "copying") continue;
    std::string view = RenderStageProgress(status->run(), previous ? &*previous : nullptr,
                                           absl::ToDoubleSeconds(every));
    if (lines > 0) std::cerr << "\033[" << lines << "A";
    std::cerr << view << std::flush;
    lines = static_cast<size_t>(std::count(view.begin(), view.end(), '\n'));
    previous = status->run();
  }
  caller.join();
  if (!response.ok()) return Fail(std::string(response.status().message()));
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(StageRunJson(*response), g.output);
  } else {
    std::cout << RenderStageRun(*response);
  }
  return ExitCode(*response);
}

}  // namespace

int StageModel(const Globals& g, const StageFlags& flags) {
  if (flags.to.empty()) {
    std::cerr << "fleet: error: name the target nodes: --to node-2,node-3\n";
    return 2;
  }
  if (flags.streams < 1 || flags.streams > 16) {
    std::cerr << "fleet: error: --streams must be 1..16; got " << flags.streams << "\n";
    return 2;
  }
  v1::StageModelRequest request;
  request.set_path(flags.path);
  request.set_from(flags.from);
  for (const std::string& n : flags.to) request.add_to(n);
  request.set_dest(flags.dest);
  request.set_streams(flags.streams);
  return RunWithProgress(g, [&](AdminClient& client) -> absl::StatusOr<v1::StageRun> {
    absl::StatusOr<v1::StageModelResponse> done = client.StageModel(request, absl::Hours(24));
    if (!done.ok()) return done.status();
    return done->run();
  });
}

int StageImage(const Globals& g, const StageImageFlags& flags) {
  if (flags.to.empty()) {
    std::cerr << "fleet: error: name the target nodes: --to node-2,node-3\n";
    return 2;
  }
  v1::StageImageRequest request;
  request.set_ref(flags.ref);
  request.set_from(flags.from);
  for (const std::string& n : flags.to) request.add_to(n);
  return RunWithProgress(g, [&](AdminClient& client) -> absl::StatusOr<v1::StageRun> {
    absl::StatusOr<v1::StageImageResponse> done = client.StageImage(request, absl::Hours(24));
    if (!done.ok()) return done.status();
    return done->run();
  });
}

int StageStatus(const Globals& g) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::StageStatusResponse> status = client->StageStatus();
  if (!status.ok()) return Fail(std::string(status.status().message()));
  if (!status->has_run()) {
    if (g.output == "json" || g.output == "yaml") {
      std::cout << PrintDocument(nlohmann::ordered_json::object(), g.output);
    } else {
      std::cout << "no staging run yet; run `fleet stage model PATH --to NODES` or `fleet stage "
                   "image REF --to NODES`\n";
    }
    return 0;
  }
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(StageRunJson(status->run()), g.output);
  } else {
    std::cout << RenderStageRun(status->run());
    if (status->run().state() == "copying") {
      std::cout << RenderStageProgress(status->run(), nullptr, 0);
    }
  }
  return 0;
}

int StageCancel(const Globals& g) {
  absl::StatusOr<AdminClient> client = Connect(g);
  if (!client.ok()) return Fail(std::string(client.status().message()));
  absl::StatusOr<v1::StageCancelResponse> cancelled = client->StageCancel();
  if (!cancelled.ok()) return Fail(std::string(cancelled.status().message()));
  if (g.output == "json" || g.output == "yaml") {
    std::cout << PrintDocument(StageRunJson(cancelled->run()), g.output);
  } else {
    std::cout << RenderStageRun(cancelled->run());
  }
  return 0;
}

}  // namespace fleet::cli
