// The seam between `fleet bench` and the endpoint it measures: plain requests (model list,
// /tokenize, calibration) and streamed ones, whose bytes reach the caller as they arrive so
// that it can time each server-sent event. Real: CurlBenchTransport; tests: FakeBenchTransport.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fleet::cli::bench {

// Called with each piece of a streamed body as it arrives; false stops the transfer (the
// caller has seen an error event, or the run was cancelled).
using ChunkSink = std::function<bool(absl::string_view)>;

class BenchTransport {
 public:
  virtual ~BenchTransport() = default;

  // GET `url`, or POST `json_body` when it is non-null, within `timeout`. HTTP 200: the body;
  // Unavailable otherwise, naming the request and the status or transport error.
  virtual absl::StatusOr<std::string> Request(const std::string& url, const std::string* json_body,
                                              absl::Duration timeout) = 0;

  // POSTs `json_body` to `url` and hands every piece of the answer to `sink` as it arrives,
  // within `timeout` for the whole exchange. Unavailable for a transport error or a status
  // other than 200 (with the body's start), Cancelled when `sink` returned false,
  // DeadlineExceeded when `timeout` passed.
  virtual absl::Status Stream(const std::string& url, const std::string& json_body,
                              absl::Duration timeout, const ChunkSink& sink) = 0;
};

}  // namespace fleet::cli::bench
