// ImageStager: docker save / docker load at the two ends of an image transfer, and the relay.
#include "agent/stage/image_stager.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/data_socket.h"
#include "common/host_port.h"
#include "common/log.h"
#include "common/process/process_runner_impl.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"

namespace fleet::agent {
namespace {

constexpr absl::Duration kInspectTimeout = absl::Seconds(30);
// The upstream connects right after every hop was prepared.
constexpr absl::Duration kConnectTimeout = absl::Seconds(60);
// No byte for this long on a data connection: the peer is gone. docker load may hold the pipe
// while it commits a layer, so this is generous.
constexpr absl::Duration kIdleTimeout = absl::Seconds(120);
// docker load opens its input within this time of starting, or it failed.
constexpr absl::Duration kLoadOpenTimeout = absl::Seconds(30);
// After the last byte: the load registers the image; a save's stderr and exit.
constexpr absl::Duration kLoadEndTimeout = absl::Minutes(30);
constexpr absl::Duration kSaveEndTimeout = absl::Seconds(60);
constexpr absl::Duration kFinishWait = absl::Minutes(30);
// A killed load and a woken relay end within this; the answer is only progress otherwise.
constexpr absl::Duration kAbortWait = absl::Seconds(30);
constexpr size_t kBufferBytes = 1 << 20;

std::string Trimmed(absl::string_view text) {
  return std::string(absl::StripAsciiWhitespace(text));
}

// Everything `fd` yields until EOF, at most until `deadline` (what was read by then).
std::string ReadUntilEof(int fd, absl::Time deadline) {
  std::string out;
  char buf[4096];
  while (true) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) return out;
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (ready < 0 && errno != EINTR) return out;
    if (ready <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return out;
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
}

// The wait status of `child` once it ended within `timeout`; it is killed when it did not.
absl::StatusOr<int> EndOf(ChildProcess& child, absl::Duration timeout) {
  if (!child.WaitForExit(timeout)) {
    child.Signal(SIGKILL).IgnoreError();
    child.WaitForExit(absl::Seconds(5));
    return absl::DeadlineExceededError(
        absl::StrCat("did not end within ", absl::FormatDuration(timeout)));
  }
  return child.Reap(/*kill_group=*/false);
}

// Writes all of `data` to a pipe; false when its reader is gone (EPIPE) or it failed.
bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

// One receive: the data port, the relay thread and the `docker load` it feeds.
class ImageStager::Transfer {
 public:
  Transfer(std::string node, std::string ref) : node_(std::move(node)), ref_(std::move(ref)) {}
  ~Transfer() {
    Stop();
    if (thread_.joinable()) thread_.join();
  }

  // Everything the relay needs, then the thread. `inspect` answers the image ID after the load.
  void Start(UniqueFd listener, UniqueFd forward, std::string peer_ip, std::string token,
             std::string dir, std::unique_ptr<ChildProcess> load, UniqueFd load_out,
             std::function<absl::StatusOr<v1::StageImageInspectResponse>()> inspect) {
    listener_ = std::move(listener);
    {
      absl::MutexLock lock(&mu_);
      listening_ = listener_.get();
      load_ = load.get();
    }
    thread_ = std::thread([this, forward = std::move(forward), peer_ip = std::move(peer_ip),
                           token = std::move(token), dir = std::move(dir), load = std::move(load),
                           load_out = std::move(load_out), inspect = std::move(inspect)]() mutable {
      Relay(std::move(forward), peer_ip, token, dir, *load, load_out.get(), inspect);
      {
        absl::MutexLock lock(&mu_);
        load_ = nullptr;
      }
      load.reset();
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      done_.Notify();
    });
  }

  // Wakes a relay blocked on its sockets and kills its load.
  void Stop() {
    stop_.store(true);
    absl::MutexLock lock(&mu_);
    if (listening_ >= 0) ::shutdown(listening_, SHUT_RDWR);
    if (connection_ >= 0) ::shutdown(connection_, SHUT_RDWR);
    if (load_ != nullptr) load_->Signal(SIGKILL).IgnoreError();
  }

  bool WaitDone(absl::Duration timeout) { return done_.WaitForNotificationWithTimeout(timeout); }

  v1::StageImageFinishResponse Progress() {
    v1::StageImageFinishResponse response;
    response.set_done(done_.HasBeenNotified());
    response.set_bytes_received(received_.load());
    absl::MutexLock lock(&mu_);
    response.set_image_id(image_id_);
    response.set_error(error_);
    return response;
  }

 private:
  void Fail(std::string message) {
    absl::MutexLock lock(&mu_);
    if (error_.empty()) error_ = std::move(message);
  }

  // The write end of the load's pipe, once docker load opened it for reading.
  UniqueFd OpenPipe(const std::string& fifo, ChildProcess& load) {
    const absl::Time deadline = absl::Now() + kLoadOpenTimeout;
    while (absl::Now() < deadline && !stop_.load()) {
      UniqueFd fd(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
      if (fd.valid()) {
        // Blocking from here on: the load's pace is the relay's back-pressure.
        ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
        return fd;
      }
      // ENXIO: no reader yet. A load that already ended will never open it.
      if (errno != ENXIO || load.WaitForExit(absl::Milliseconds(10))) break;
    }
    return UniqueFd();
  }

  void Relay(UniqueFd forward, const std::string& peer_ip, const std::string& token,
             const std::string& dir, ChildProcess& load, int load_out,
             const std::function<absl::StatusOr<v1::StageImageInspectResponse>()>& inspect) {
    // A load that dies makes writes to its pipe raise SIGPIPE, which would end the agent;
    // blocked in this thread, the write fails with EPIPE instead.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);

    int refused = 0;
    absl::StatusOr<UniqueFd> connection =
        AcceptWithToken(listener_.get(), peer_ip, token, kConnectTimeout, &refused);
    {
      absl::MutexLock lock(&mu_);
      listening_ = -1;
      listener_.reset();
      if (connection.ok()) connection_ = connection->get();
    }
    if (!connection.ok()) {
      Fail(absl::StrCat("node ", node_, ": the upstream ", peer_ip,
                        " did not connect: ", connection.status().message()));
      return;
    }
    SetSocketTimeouts(connection->get(), kIdleTimeout).IgnoreError();
    UniqueFd pipe = OpenPipe(dir + "/image.tar", load);
    if (!pipe.valid() && !stop_.load()) {
      Fail(absl::StrCat("node ", node_, ": docker load did not open its input: ",
                        Trimmed(ReadUntilEof(load_out, absl::Now() + absl::Seconds(5)))));
    }
    std::vector<char> buf(kBufferBytes);
    while (true) {
      const ssize_t n = ::recv(connection->get(), buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) break;
      if (n < 0) {
        Fail(absl::StrCat("node ", node_, ": the stream from ", peer_ip, " broke after ",
                          received_.load(), " bytes: ", std::strerror(errno)));
        break;
      }
      received_.fetch_add(static_cast<uint64_t>(n));
      // The load's own output says why it stopped reading; the relay carries on for the others.
      if (pipe.valid() && !WriteAll(pipe.get(), buf.data(), static_cast<size_t>(n))) pipe.reset();
      if (forward.valid()) {
        if (absl::Status sent = SendAll(forward.get(), buf.data(), static_cast<size_t>(n));
            !sent.ok()) {
          Log(LogLevel::kWarning, "stage", "next hop lost; relaying stopped",
              {{"node", node_}, {"error", sent.message()}});
          forward.reset();
        }
      }
    }
    {
      absl::MutexLock lock(&mu_);
      connection_ = -1;
    }
    pipe.reset();  // end of input for docker load
    if (forward.valid()) ::shutdown(forward.get(), SHUT_WR);

    const std::string said = Trimmed(ReadUntilEof(load_out, absl::Now() + kLoadEndTimeout));
    absl::StatusOr<int> ended = EndOf(load, absl::Seconds(10));
    if (!ended.ok() || !WIFEXITED(*ended) || WEXITSTATUS(*ended) != 0) {
      Fail(absl::StrCat("node ", node_, ": docker load failed (",
                        ended.ok() ? DescribeWaitStatus(*ended) : ended.status().message(), "): \"",
                        said, "\""));
      return;
    }
    absl::StatusOr<v1::StageImageInspectResponse> loaded = inspect();
    if (!loaded.ok()) {
      Fail(std::string(loaded.status().message()));
    } else if (!loaded->present()) {
      Fail(absl::StrCat("node ", node_, ": docker load succeeded (\"", said, "\") but ", ref_,
                        " is not there; a digest reference is not kept by docker save: name "
                        "the image by tag or ID"));
    } else {
      absl::MutexLock lock(&mu_);
      image_id_ = loaded->image_id();
    }
  }

  const std::string node_;
  const std::string ref_;
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> received_{0};
  absl::Notification done_;
  absl::Mutex mu_;
  int listening_ ABSL_GUARDED_BY(mu_) = -1;
  int connection_ ABSL_GUARDED_BY(mu_) = -1;
  ChildProcess* load_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string image_id_ ABSL_GUARDED_BY(mu_);
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

ImageStager::ImageStager(ImageStagerOptions options)
    : options_(std::move(options)),
      runner_(options_.runner == nullptr ? DefaultProcessRunner() : options_.runner) {}

ImageStager::~ImageStager() {
  Shutdown();
  std::map<std::string, std::shared_ptr<Transfer>> transfers;
  {
    absl::MutexLock lock(&mu_);
    transfers.swap(transfers_);
  }
  // Destroyed here, outside the lock: each joins its relay.
}

void ImageStager::Shutdown() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, transfer] : transfers_) transfer->Stop();
}

absl::StatusOr<v1::StageImageInspectResponse> ImageStager::Inspect(
    const v1::StageImageInspectRequest& request) {
  if (request.ref().empty() || request.ref()[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat("an image reference like repo/name:tag; got `", request.ref(), "`"));
  }
  absl::StatusOr<RunResult> result =
      runner_->Run({.argv = {options_.docker, "image", "inspect", "--format", "{{.Id}} {{.Size}}",
                             request.ref()}},
                   kInspectTimeout);
  if (!result.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no docker CLI on node ", options_.node_name, ": ", result.status().message(),
                     "; install docker.io there and start dockerd"));
  }
  v1::StageImageInspectResponse response;
  if (!result->ok()) {
    if (absl::StrContains(absl::AsciiStrToLower(result->err), "no such image")) return response;
    return absl::FailedPreconditionError(absl::StrCat(
        "docker on node ", options_.node_name, " cannot inspect ", request.ref(), ": \"",
        Trimmed(result->err), "\"; is dockerd running there? (systemctl start docker)"));
  }
  std::vector<std::string> words = absl::StrSplit(Trimmed(result->out), ' ');
  uint64_t size = 0;
  if (words.size() != 2 || !absl::StartsWith(words[0], "sha256:") ||
      !absl::SimpleAtoi(words[1], &size)) {
    return absl::InternalError(absl::StrCat("docker image inspect ", request.ref(), " on node ",
                                            options_.node_name, " said \"", Trimmed(result->out),
                                            "\"; expected \"sha256:… SIZE\""));
  }
  response.set_present(true);
  response.set_image_id(words[0]);
  response.set_size(size);
  return response;
}

absl::StatusOr<v1::StageImageReceiveResponse> ImageStager::Receive(
    const v1::StageImageReceiveRequest& request) {
  if (request.token().size() != kDataTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the transfer token must be ", kDataTokenBytes,
                                                   " bytes; got ", request.token().size()));
  }
  if (request.ref().empty() || request.ref()[0] == '-') {
    return absl::InvalidArgumentError(absl::StrCat("bad image reference `", request.ref(), "`"));
  }
  auto transfer = std::make_shared<Transfer>(options_.node_name, request.ref());
  {
    absl::MutexLock lock(&mu_);
    if (transfers_.contains(request.transfer_id())) {
      return absl::AlreadyExistsError(
          absl::StrCat("image transfer ", request.transfer_id(), " already runs here"));
    }
  }
  UniqueFd forward;
  if (request.has_forward()) {
    ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(request.forward().target()));
    ASSIGN_OR_RETURN(sockaddr_in next, Ipv4Address(hp.host, hp.port, "next hop"));
    absl::StatusOr<UniqueFd> fd = ConnectWithToken(request.forward().source_ip(), next,
                                                   request.forward().token(), kIdleTimeout);
    if (!fd.ok()) {
      return absl::UnavailableError(
          absl::StrCat("node ", options_.node_name, ": cannot reach the next hop ",
                       request.forward().target(), ": ", fd.status().message()));
    }
    forward = *std::move(fd);
  }
  ASSIGN_OR_RETURN(DataListener listener, ListenForData(request.bind_ip()));

  // A named pipe in a private directory: docker load reads its input from a path, and a pipe
  // lets the load run while the image arrives.
  std::error_code ec;
  std::filesystem::create_directories(options_.fifo_dir, ec);
  std::string dir = absl::StrCat(options_.fifo_dir, "/image-load-XXXXXX");
  if (::mkdtemp(dir.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", options_.node_name, ": cannot make a directory under ",
                     options_.fifo_dir, ": ", std::strerror(errno)));
  }
  const std::string fifo = dir + "/image.tar";
  if (::mkfifo(fifo.c_str(), 0600) != 0) {
    const int err = errno;
    std::filesystem::remove_all(dir, ec);
    return ErrnoStatus("mkfifo " + fifo, err);
  }
  absl::StatusOr<std::unique_ptr<ChildProcess>> load =
      runner_->Start({.argv = {options_.docker, "load", "--input", fifo},
                      .stdout_to = OutputTo::kPipe,
                      .stderr_to = OutputTo::kStdout});
  if (!load.ok()) {
    std::filesystem::remove_all(dir, ec);
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", options_.node_name, ": cannot start docker load: ", load.status().message(),
        "; install docker.io there and start dockerd"));
  }
  UniqueFd load_out = (*load)->TakeStdout();
  v1::StageImageInspectRequest inspect;
  inspect.set_ref(request.ref());
  v1::StageImageReceiveResponse response;
  response.set_port(listener.port);
  transfer->Start(std::move(listener.fd), std::move(forward), request.peer_ip(), request.token(),
                  dir, *std::move(load), std::move(load_out),
                  [this, inspect] { return Inspect(inspect); });
  absl::MutexLock lock(&mu_);
  transfers_[request.transfer_id()] = std::move(transfer);
  return response;
}

absl::StatusOr<v1::StageSendResponse> ImageStager::Send(const v1::StageImageSendRequest& request) {
  if (request.token().size() != kDataTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the transfer token must be ", kDataTokenBytes,
                                                   " bytes; got ", request.token().size()));
  }
  if (request.ref().empty() || request.ref()[0] == '-') {
    return absl::InvalidArgumentError(absl::StrCat("bad image reference `", request.ref(), "`"));
  }
  ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(request.target()));
  ASSIGN_OR_RETURN(sockaddr_in target, Ipv4Address(hp.host, hp.port, "first hop"));
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ChildProcess>> save =
      runner_->Start({.argv = {options_.docker, "save", request.ref()},
                      .stdout_to = OutputTo::kPipe,
                      .stderr_to = OutputTo::kPipe});
  if (!save.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", options_.node_name, ": cannot start docker save: ", save.status().message(),
        "; install docker.io there and start dockerd"));
  }
  UniqueFd out = (*save)->TakeStdout();
  UniqueFd err = (*save)->TakeStderr();
  absl::StatusOr<UniqueFd> connection =
      ConnectWithToken(request.source_ip(), target, request.token(), kIdleTimeout);
  if (!connection.ok()) {
    return absl::UnavailableError(absl::StrCat("node ", options_.node_name,
                                               ": cannot reach the first hop ", request.target(),
                                               ": ", connection.status().message()));
  }
  uint64_t sent = 0;
  std::vector<char> buf(kBufferBytes);
  while (true) {
    const ssize_t n = ::read(out.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (absl::Status st = SendAll(connection->get(), buf.data(), static_cast<size_t>(n));
        !st.ok()) {
      return absl::UnavailableError(absl::StrCat("node ", options_.node_name, ": the first hop ",
                                                 request.target(), " was lost after ", sent,
                                                 " bytes: ", st.message()));
    }
    sent += static_cast<uint64_t>(n);
  }
  ::shutdown(connection->get(), SHUT_WR);
  const std::string said = Trimmed(ReadUntilEof(err.get(), absl::Now() + kSaveEndTimeout));
  absl::StatusOr<int> ended = EndOf(**save, kSaveEndTimeout);
  if (!ended.ok() || !WIFEXITED(*ended) || WEXITSTATUS(*ended) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", options_.node_name, ": docker save ", request.ref(), " failed (",
        ended.ok() ? DescribeWaitStatus(*ended) : ended.status().message(), "): \"", said, "\""));
  }
  v1::StageSendResponse response;
  response.set_bytes_sent(sent);
  response.set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  return response;
}

absl::StatusOr<v1::StageImageFinishResponse> ImageStager::Finish(
    const v1::StageFinishRequest& request) {
  std::shared_ptr<Transfer> transfer;
  {
    absl::MutexLock lock(&mu_);
    auto it = transfers_.find(request.transfer_id());
    if (it == transfers_.end()) {
      return absl::NotFoundError(absl::StrCat("no image transfer ", request.transfer_id(),
                                              " on node ", options_.node_name));
    }
    transfer = it->second;
    if (request.abort()) transfers_.erase(it);
  }
  if (request.abort()) {
    // Cancelled: the relay's sockets close and `docker load` is killed before it tags anything.
    transfer->Stop();
    transfer->WaitDone(kAbortWait);
    return transfer->Progress();
  }
  if (request.wait()) transfer->WaitDone(kFinishWait);
  v1::StageImageFinishResponse response = transfer->Progress();
  if (request.wait() && response.done()) {
    absl::MutexLock lock(&mu_);
    transfers_.erase(request.transfer_id());
  }
  return response;
}

}  // namespace fleet::agent
