// MetricsServer: a read-only Prometheus endpoint (plain HTTP, GET /metrics) for a daemon, and
// helpers for the metrics a daemon computes when it is scraped. The exposition is
// prometheus-cpp's (Debian's prometheus-cpp-dev), never written by hand.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace prometheus {
class Exposer;
}

namespace fleet {

// Example:
//   auto registry = std::make_shared<prometheus::Registry>();
//   ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> server,
//                    MetricsServer::Start("127.0.0.1:0", {registry}));
//   server->address();  // "127.0.0.1:41234"
//
// The endpoint answers GET /metrics only: nothing on it can change state, so it needs neither
// TLS nor a credential and may be opened to a Prometheus server on the management network.
class MetricsServer {
 public:
  // `listen` is "HOST:PORT" (port 0 picks a free one). Unavailable when it cannot be bound.
  // The server keeps the collectables alive for as long as it runs.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> sources);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // "HOST:PORT" actually listened on.
  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;

  std::vector<std::shared_ptr<prometheus::Collectable>> sources_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

// The text exposition of `sources`, as a scrape would return it (tests, `fleet up`).
std::string SerializeMetrics(const std::vector<std::shared_ptr<prometheus::Collectable>>& sources);

// A Collectable whose families are computed at every scrape by `collect` (figures the daemon
// already keeps, such as nodes by state, are read then instead of mirrored into gauges).
std::shared_ptr<prometheus::Collectable> ScrapeTimeCollectable(
    std::function<std::vector<prometheus::MetricFamily>()> collect);

// Builders for scrape-time families.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;
prometheus::MetricFamily GaugeFamily(std::string name, std::string help);
prometheus::MetricFamily CounterFamily(std::string name, std::string help);
// Appends one sample; the family's type chooses the gauge or counter field.
void AddSample(prometheus::MetricFamily& family, const MetricLabels& labels, double value);

}  // namespace fleet
