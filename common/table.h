// Plain-text tables in kubectl's layout: upper-case headers, columns padded to their widest
// cell and separated by three spaces, no borders.
#pragma once

#include <string>
#include <vector>

namespace fleet {

// Example:
//   Table t({"NAME", "STATE"});
//   t.AddRow({"spark-1", "Ready"});
//   std::cout << t.Render();
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  // Short rows are padded with empty cells; cells beyond the headers are dropped.
  void AddRow(std::vector<std::string> cells);
  std::string Render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace fleet
