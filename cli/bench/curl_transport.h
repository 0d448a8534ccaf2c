// BenchTransport over libcurl: one easy handle per transport (keep-alive between requests of
// one concurrent slot), no proxy, no signals, and bytes handed over as curl receives them.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "cli/bench/transport.h"

namespace fleet::cli::bench {

class CurlBenchTransport final : public BenchTransport {
 public:
  // ResourceExhausted when libcurl cannot make a handle. A transfer in flight ends with
  // Cancelled soon after `*cancel` turns true (Ctrl-C), even while no byte arrives.
  static absl::StatusOr<std::unique_ptr<CurlBenchTransport>> Create(
      const std::atomic<bool>* cancel = nullptr);

  absl::StatusOr<std::string> Request(const std::string& url, const std::string* json_body,
                                      absl::Duration timeout) override;
  absl::Status Stream(const std::string& url, const std::string& json_body, absl::Duration timeout,
                      const ChunkSink& sink) override;

 private:
  struct CurlDeleter {
    void operator()(void* curl) const;
  };
  CurlBenchTransport(void* curl, const std::atomic<bool>* cancel) : curl_(curl), cancel_(cancel) {}

  std::unique_ptr<void, CurlDeleter> curl_;
  const std::atomic<bool>* cancel_;
};

}  // namespace fleet::cli::bench
