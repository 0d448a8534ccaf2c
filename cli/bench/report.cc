// `fleet bench`'s output (see report.h).
#include "cli/bench/report.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fleet::cli::bench {
namespace {

std::string MeanSd(const Stat& s, double scale = 1) {
  return absl::StrFormat("%.2f ± %.2f", s.mean * scale, s.sd * scale);
}

std::string TestName(const char* kind, int n, int depth) {
  std::string name = absl::StrCat(kind, n);
  if (depth > 0) absl::StrAppend(&name, " @ d", depth);
  return name;
}

// Display width: "±" is two bytes and one column.
size_t Width(const std::string& s) {
  size_t w = 0;
  for (unsigned char c : s) w += (c & 0xC0) != 0x80;
  return w;
}

// The model's name goes into SVG text: it must not be read as markup.
std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string RenderTable(const BenchReport& report) {
  const std::vector<std::string> head = {"model",       "test",      "c",       "t/s",
                                         "t/s (total)", "ttft (ms)", "e2e (ms)"};
  std::vector<std::vector<std::string>> lines;
  for (const Row& row : report.rows) {
    const bool ok = row.runs > 0;
    const std::string c = absl::StrCat(row.concurrency);
    lines.push_back({report.model, TestName("pp", row.pp, row.depth), c,
                     ok ? MeanSd(row.pp_tps) : "error", "", ok ? MeanSd(row.ttft_s, 1000) : "",
                     ""});
    lines.push_back({report.model, TestName("tg", row.tg, row.depth), c,
                     ok ? MeanSd(row.tg_tps) : "error", ok ? MeanSd(row.tg_tps_total) : "", "",
                     ok ? MeanSd(row.e2e_s, 1000) : ""});
  }
  std::vector<size_t> width(head.size());
  for (size_t i = 0; i < head.size(); ++i) {
    width[i] = Width(head[i]);
    for (const auto& line : lines) width[i] = std::max(width[i], Width(line[i]));
  }
  auto cell = [&](const std::string& s, size_t i) {
    std::string pad(width[i] - Width(s), ' ');
    return i == 0 ? s + pad : pad + s;  // the model left, figures right, as llama-benchy
  };
  std::string out = "|";
  for (size_t i = 0; i < head.size(); ++i) absl::StrAppend(&out, " ", cell(head[i], i), " |");
  out += "\n|";
  for (size_t i = 0; i < head.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? ":" : "-", std::string(width[i], '-'), i == 0 ? "-" : ":", "|");
  }
  out += "\n";
  for (const auto& line : lines) {
    out += "|";
    for (size_t i = 0; i < head.size(); ++i) absl::StrAppend(&out, " ", cell(line[i], i), " |");
    out += "\n";
  }
  absl::StrAppend(&out, "\nprompt tokens counted by: ",
                  report.counted_by == "tokenize" ? "the server's /tokenize"
                                                  : "calibration on usage.prompt_tokens",
                  "\n");
  for (const Row& row : report.rows) {
    for (const std::string& e : row.errors) {
      absl::StrAppend(&out, "error: pp", row.pp, " tg", row.tg, " d", row.depth, " c",
                      row.concurrency, " ", e, "\n");
    }
  }
  if (!report.stopped.empty()) {
    absl::StrAppend(&out, "stopped early: ", report.stopped, "; the rows above were measured\n");
  }
  return out;
}

nlohmann::ordered_json ReportJson(const BenchReport& report) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const Row& row : report.rows) {
    const bool ok = row.runs > 0;
    auto fig = [ok](double v) { return ok ? nlohmann::ordered_json(v) : nlohmann::ordered_json(); };
    nlohmann::ordered_json r;
    r["pp"] = row.pp;
    r["tg"] = row.tg;
    r["depth"] = row.depth;
    r["concurrency"] = row.concurrency;
    r["ttft_s"] = fig(row.ttft_s.mean);
    r["pp_tps"] = fig(row.pp_tps.mean);
    r["tg_tps"] = fig(row.tg_tps.mean);
    r["tg_tps_total"] = fig(row.tg_tps_total.mean);
    r["e2e_s"] = fig(row.e2e_s.mean);
    r["runs"] = row.runs;
    r["ttft_s_sd"] = fig(row.ttft_s.sd);
    r["pp_tps_sd"] = fig(row.pp_tps.sd);
    r["tg_tps_sd"] = fig(row.tg_tps.sd);
    r["tg_tps_total_sd"] = fig(row.tg_tps_total.sd);
    r["e2e_s_sd"] = fig(row.e2e_s.sd);
    r["errors"] = row.errors;
    rows.push_back(std::move(r));
  }
  nlohmann::ordered_json doc;
  doc["model"] = report.model;
  doc["counted_by"] = report.counted_by;
  doc["stopped"] = report.stopped;
  doc["rows"] = std::move(rows);
  return doc;
}

std::string RenderSvg(const BenchReport& report) {
  std::map<int, std::vector<std::pair<int, double>>> lines;  // depth → (concurrency, t/s)
  int max_c = 1;
  double max_y = 1;
  for (const Row& row : report.rows) {
    if (row.runs == 0) continue;
    lines[row.depth].push_back({row.concurrency, row.tg_tps_total.mean});
    max_c = std::max(max_c, row.concurrency);
    max_y = std::max(max_y, row.tg_tps_total.mean);
  }
  // A round top for the y axis: 1, 2 or 5 times a power of ten.
  double step = std::pow(10, std::floor(std::log10(max_y)));
  double top = step;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * step >= max_y) {
      top = m * step;
      break;
    }
  }
  constexpr double kW = 640, kH = 400, kLeft = 70, kRight = 150, kTop = 40, kBottom = 50;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  auto x = [&](double c) { return kLeft + (max_c == 1 ? pw / 2 : (c - 1) / (max_c - 1) * pw); };
  auto y = [&](double v) { return kTop + ph - v / top * ph; };
  static constexpr const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                            "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.0f\" y=\"22\" font-size=\"14\">decode throughput, %s</text>\n",
      kW, kH, kLeft, XmlEscape(report.model));
  absl::StrAppendFormat(
      &svg,
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
      kLeft, kTop, kLeft, kTop + ph, kLeft, kTop + ph, kLeft + pw, kTop + ph);
  for (int i = 0; i <= 5; ++i) {
    double v = top * i / 5;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                          kLeft, y(v), kLeft + pw, y(v), kLeft - 6, y(v) + 4, v);
  }
  std::vector<int> cs;
  for (const auto& [d, pts] : lines) {
    for (const auto& [c, v] : pts) cs.push_back(c);
  }
  std::sort(cs.begin(), cs.end());
  cs.erase(std::unique(cs.begin(), cs.end()), cs.end());
  for (int c : cs) {
    absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n",
                          x(c), kTop + ph + 18, c);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">concurrent requests"
                        "</text>\n<text transform=\"translate(18,%.1f) rotate(-90)\" "
                        "text-anchor=\"middle\">total decode tokens/s</text>\n",
                        kLeft + pw / 2, kH - 10, kTop + ph / 2);
  size_t i = 0;
  for (auto& [depth, pts] : lines) {
    std::sort(pts.begin(), pts.end());
    const char* color = kColors[i % (sizeof(kColors) / sizeof(kColors[0]))];
    std::string points;
    for (const auto& [c, v] : pts) {
      absl::StrAppendFormat(&points, "%.1f,%.1f ", x(c), y(v));
      absl::StrAppendFormat(&svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x(c),
                            y(v), color);
    }
    absl::StrAppendFormat(&svg,
                          "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>"
                          "\n<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">depth %d</text>\n",
                          points, color, kLeft + pw + 12, kTop + 16 + 18 * i, color, depth);
    ++i;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace fleet::cli::bench
