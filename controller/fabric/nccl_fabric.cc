// The NCCL fabric test's parsing, judging and recipe (see nccl_fabric.h).
#include "controller/fabric/nccl_fabric.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "controller/fabric/fabric_plan.h"

namespace fleet::controller {
namespace {

std::string SizeText(uint64_t bytes) {
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return absl::StrCat(bytes >> 20, " MiB");
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " B");
}

}  // namespace

absl::StatusOr<std::vector<NcclRow>> ParseBenchTables(absl::string_view text) {
  std::vector<NcclRow> rows;
  std::string op;
  int ranks = 0;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    absl::string_view rest = line;
    // "# fleet-engine bench-collectives: all_reduce, 2 ranks, nccl 2.30.4 over 2 GPUs"
    if (absl::ConsumePrefix(&rest, "# fleet-engine bench-collectives: ")) {
      std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits(", ", 2));
      if (parts.size() < 2 || !absl::SimpleAtoi(absl::StripSuffix(parts[1], " ranks"), &ranks)) {
        return absl::InvalidArgumentError(absl::StrCat("line ", line_number,
                                                       " of the benchmark's output is not a table "
                                                       "header: \"",
                                                       line, "\""));
      }
      op = parts[0];
      continue;
    }
    // Rows start with their size; the rank's log lines (stderr shares the file) do not.
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (op.empty() || stripped.empty() ||
        !absl::ascii_isdigit(static_cast<unsigned char>(stripped[0]))) {
      continue;
    }
    std::vector<absl::string_view> f = absl::StrSplit(stripped, ' ', absl::SkipEmpty());
    NcclRow row{.op = op, .ranks = ranks};
    if (f.size() != 9 || !absl::SimpleAtoi(f[0], &row.bytes) ||
        !absl::SimpleAtod(f[5], &row.time_us) || !absl::SimpleAtod(f[6], &row.algbw_gbs) ||
        !absl::SimpleAtod(f[7], &row.busbw_gbs) || !absl::SimpleAtoi(f[8], &row.wrong)) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number,
                       " of the benchmark's output is not a row of size, "
                       "count, type, redop, root, time, algbw, busbw, #wrong: \"",
                       line, "\""));
    }
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    return absl::NotFoundError("the benchmark's output holds no table (see the rank's log)");
  }
  return rows;
}

std::vector<v1::FabricResult> NcclResults(const std::vector<NcclRow>& rows,
                                          const std::vector<FabricEndpoint>& nodes) {
  std::map<std::string, const NcclRow*> largest;
  std::map<std::string, int64_t> wrong;
  for (const NcclRow& row : rows) {
    const NcclRow*& best = largest[row.op];
    if (best == nullptr || row.bytes > best->bytes) best = &row;
    wrong[row.op] += row.wrong;
  }
  bool sparks = nodes.size() >= 2;
  for (const FabricEndpoint& n : nodes) sparks = sparks && n.gpu_name == "NVIDIA GB10";
  std::vector<std::string> others;
  for (size_t i = 1; i < nodes.size(); ++i) others.push_back(nodes[i].name);

  std::vector<v1::FabricResult> out;
  for (const auto& [op, row] : largest) {
    v1::FabricResult r;
    r.set_test("nccl");
    r.set_from(nodes.empty() ? "" : nodes[0].name);
    r.set_to(others.empty() ? r.from() : absl::StrJoin(others, ","));
    r.set_device(absl::StrCat(op, " ", SizeText(row->bytes)));
    if (row->ranks < 2) {
      r.set_measured(false);
      r.set_verdict("not-measured");
      r.set_reason(absl::StrFormat(
          "one rank has no bus to measure (nccl-tests' busbw is 0 for one rank); %s over the "
          "sweep: %d wrong elements%s",
          op, wrong[op], wrong[op] == 0 ? ", every result correct" : ""));
      out.push_back(std::move(r));
      continue;
    }
    r.set_measured(true);
    // nccl-tests prints GB/s (10^9 bytes); results are in Gb/s.
    r.set_bandwidth_gbps(row->busbw_gbs * 8);
    r.set_expected_gbps(sparks ? kSparkNcclBusGbps : 0);
    if (wrong[op] != 0) {
      r.set_verdict("fail");
      r.set_reason(absl::StrCat(wrong[op], " elements of ", op,
                                " were wrong over the sweep: the collective returned incorrect "
                                "data (check the NCCL version and NCCL_* settings)"));
    } else {
      r.set_verdict(FabricVerdict(r.bandwidth_gbps(), r.expected_gbps()));
      if (r.verdict() == "unknown") {
        r.set_reason(absl::StrCat("no expected bus bandwidth for these GPUs (", kSparkNcclBusGbps,
                                  " Gb/s is known between DGX Sparks)"));
      } else if (r.verdict() != "pass") {
        r.set_reason(absl::StrFormat(
            "bus bandwidth %.1f Gb/s is %.0f%% of the %.0f Gb/s NVIDIA's cluster check demands",
            r.bandwidth_gbps(), 100 * r.bandwidth_gbps() / r.expected_gbps(), r.expected_gbps()));
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::string NcclBenchRecipe(const std::vector<std::string>& nodes) {
  return absl::StrCat(
      "recipe_version: \"2\"\n"
      "name: fabric-nccl\n"
      "description: fleet fabric's NCCL test (fleet-engine bench-collectives)\n"
      "engine: native\n"
      "runtime: process\n"
      "nodes: ",
      nodes.size(), "\nplacement: [", absl::StrJoin(nodes, ", "),
      "]\n"
      "restart: {policy: never}\n"
      "command: fleet-engine bench-collectives --device cuda ",
      kNcclSweepFlags, "\n");
}

}  // namespace fleet::controller
