// RunNcclBenchGroup (see nccl_bench_group.h).
#include "controller/groups/nccl_bench_group.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controller/fabric/nccl_fabric.h"

namespace fleet::controller {
namespace {

// Another rank's end fails the group a moment before rank 0's own end is reported: rank 0's
// exit is waited for this long after the group failed.
constexpr absl::Duration kRankZeroGrace = absl::Seconds(5);

bool RankZeroEnded(const v1::Group& group) {
  for (const v1::GroupRank& rank : group.ranks()) {
    if (rank.rank() == 0) return !rank.status().exit().empty();
  }
  return false;
}

bool GroupEnded(const v1::Group& group) {
  return group.state() == v1::GROUP_STATE_FAILED || group.state() == v1::GROUP_STATE_STOPPED;
}

// The last `n` bytes of `text`, for an error message.
std::string Tail(const std::string& text, size_t n = 600) {
  return text.size() <= n ? text : text.substr(text.size() - n);
}

}  // namespace

absl::StatusOr<std::string> RunNcclBenchGroup(GroupManager& groups,
                                              const std::vector<std::string>& nodes,
                                              absl::Duration timeout) {
  v1::ApplyRequest apply;
  apply.set_recipe_path("(fleet fabric --tests nccl)");
  apply.set_recipe_yaml(NcclBenchRecipe(nodes));
  apply.set_name(kNcclBenchGroup);
  absl::StatusOr<v1::ApplyResponse> applied = groups.Apply(apply);
  if (!applied.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fleet-engine bench-collectives could not start: ", applied.status().message()));
  }
  const absl::Time deadline = absl::Now() + timeout;
  absl::Time ended_at = absl::InfiniteFuture();
  v1::Group group;
  while (true) {
    ASSIGN_OR_RETURN(v1::GetGroupResponse got, groups.Get(kNcclBenchGroup));
    group = got.group();
    if (RankZeroEnded(group)) break;
    if (GroupEnded(group)) ended_at = std::min(ended_at, absl::Now());
    if (absl::Now() - ended_at >= kRankZeroGrace) break;
    if (absl::Now() >= deadline) {
      (void)groups.Stop(kNcclBenchGroup);
      return absl::DeadlineExceededError(
          absl::StrCat("fleet-engine bench-collectives still ran after ",
                       absl::FormatDuration(timeout), "; its ranks were stopped"));
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  v1::GroupLogsRequest read;
  read.set_name(kNcclBenchGroup);
  read.set_rank(0);
  read.set_tail_lines(2000);
  absl::StatusOr<v1::GroupLogsResponse> log = groups.Logs(read);
  // The ranks have ended; stopping confirms them gone and frees their nodes.
  (void)groups.Stop(kNcclBenchGroup);
  if (!log.ok()) {
    return absl::UnavailableError(
        absl::StrCat("rank 0's output could not be read: ", log.status().message()));
  }
  // Rank 0 writes the tables once every rank has run the whole sweep, and exits 0 only when
  // no element was wrong on any rank; the others may be stopped once it has ended.
  for (const v1::GroupRank& rank : group.ranks()) {
    if (rank.rank() == 0 && rank.status().exit() != "exited with status 0") {
      return absl::AbortedError(
          absl::StrCat("rank 0 on ", rank.node_name(), " ",
                       rank.status().exit().empty() ? group.message() : rank.status().exit(),
                       "; the end of its output: ", Tail(log->data())));
    }
  }
  return log->data();
}

}  // namespace fleet::controller
