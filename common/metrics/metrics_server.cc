// MetricsServer: prometheus-cpp's Exposer (CivetWeb) behind a Status-returning factory.
#include "common/metrics/metrics_server.h"

#include <exception>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/host_port.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"

namespace fleet {
namespace {

class FunctionCollectable : public prometheus::Collectable {
 public:
  explicit FunctionCollectable(std::function<std::vector<prometheus::MetricFamily>()> collect)
      : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

 private:
  std::function<std::vector<prometheus::MetricFamily>()> collect_;
};

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> sources) {
  absl::StatusOr<HostPort> split = ParseHostOptionalPort(listen);
  if (!split.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen: ", split.status().message()));
  }
  // CivetWeb's form: "PORT" for every interface, else "HOST:PORT" / "[V6]:PORT".
  std::string civet =
      split->host.empty() ? absl::StrCat(split->port) : JoinHostPort(split->host, split->port);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->sources_ = std::move(sources);
  // CivetWeb reports a port it cannot bind by throwing; it never crosses our API.
  try {
    // One thread: a scrape is a few kilobytes, and Prometheus scrapes one at a time.
    server->exposer_ = std::make_unique<prometheus::Exposer>(civet, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what(),
                                               "; pass a free --metrics-listen HOST:PORT (port 0 "
                                               "picks one)"));
  }
  for (const auto& source : server->sources_) server->exposer_->RegisterCollectable(source);
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics server on ", listen, " has no port"));
  }
  server->address_ = JoinHostPort(split->host.empty() ? "0.0.0.0" : split->host,
                                  static_cast<uint16_t>(ports.front()));
  return server;
}

MetricsServer::~MetricsServer() = default;

std::string SerializeMetrics(const std::vector<std::shared_ptr<prometheus::Collectable>>& sources) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& source : sources) {
    std::vector<prometheus::MetricFamily> some = source->Collect();
    families.insert(families.end(), std::make_move_iterator(some.begin()),
                    std::make_move_iterator(some.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

std::shared_ptr<prometheus::Collectable> ScrapeTimeCollectable(
    std::function<std::vector<prometheus::MetricFamily>()> collect) {
  return std::make_shared<FunctionCollectable>(std::move(collect));
}

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  return Family(std::move(name), std::move(help), prometheus::MetricType::Gauge);
}

prometheus::MetricFamily CounterFamily(std::string name, std::string help) {
  return Family(std::move(name), std::move(help), prometheus::MetricType::Counter);
}

void AddSample(prometheus::MetricFamily& family, const MetricLabels& labels, double value) {
  prometheus::ClientMetric metric;
  for (const auto& [name, label_value] : labels) metric.label.push_back({name, label_value});
  if (family.type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

}  // namespace fleet
