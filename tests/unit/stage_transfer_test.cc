// The staging transfer's endpoints over real loopback sockets, in one process: a source and a
// chain of two receivers, each writing under its own prefix. Chunks are 64 KiB so each case
// moves a few MiB; every wait is bounded by the endpoints' own timeouts.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/probes/artifacts.h"
#include "agent/stage/manifest.h"
#include "agent/stage/stage_endpoints.h"
#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kChunk = 64 << 10;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class StageTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stage_transfer_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    std::filesystem::create_directories(root_ + "/src/sub");
    std::mt19937 rng(7);
    std::string big(3 * kChunk + 123, '\0');
    for (char& c : big) c = static_cast<char>(rng());
    Write("weights.bin", big);
    Write("sub/config.json", "{\"a\": 1}");
    Write("empty", "");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& relative, const std::string& content) {
    std::ofstream(absl::StrCat(root_, "/src/", relative), std::ios::binary) << content;
  }
  v1::StageManifest Manifest() {
    absl::StatusOr<ScannedTree> tree = BuildManifest(root_ + "/src", {.chunk_bytes = chunk_});
    EXPECT_TRUE(tree.ok()) << tree.status();
    return tree->manifest;
  }

  struct Round {
    std::vector<v1::StageFinishResponse> finished;
    std::vector<v1::StagePrepareResponse> prepared;
    absl::Status send;
  };
  // One round through source -> nodes[0] -> nodes[1] ..., as the controller runs it.
  // `streams` TCP connections per link.
  Round Run(StageEndpoints& source, std::vector<StageEndpoints*> nodes, const std::string& id,
            int streams = 2) {
    const v1::StageManifest manifest = Manifest();
    Round round;
    round.prepared.resize(nodes.size());
    std::vector<uint32_t> union_below;
    std::string next_target;
    std::string next_token;
    for (int k = static_cast<int>(nodes.size()) - 1; k >= 0; --k) {
      v1::StagePrepareRequest prepare;
      prepare.set_transfer_id(id);
      *prepare.mutable_manifest() = manifest;
      prepare.set_dest("/model");
      prepare.set_token(std::string(32, static_cast<char>('a' + k)));
      prepare.set_bind_ip("127.0.0.1");
      prepare.set_peer_ip("127.0.0.1");
      prepare.set_streams(streams);
      if (!next_target.empty()) {
        v1::StageForward* fwd = prepare.mutable_forward();
        fwd->set_target(next_target);
        fwd->set_token(next_token);
        fwd->set_source_ip("127.0.0.1");
        for (uint32_t g : union_below) fwd->add_chunks(g);
      }
      absl::StatusOr<v1::StagePrepareResponse> p = nodes[k]->Prepare(prepare);
      EXPECT_TRUE(p.ok()) << p.status();
      if (!p.ok()) return round;
      round.prepared[k] = *p;
      std::set<uint32_t> all(union_below.begin(), union_below.end());
      all.insert(p->needed().begin(), p->needed().end());
      union_below.assign(all.begin(), all.end());
      next_target = absl::StrCat("127.0.0.1:", p->port());
      next_token = prepare.token();
    }
    v1::StageSendRequest send;
    send.set_transfer_id(id);
    *send.mutable_manifest() = manifest;
    send.set_target(next_target);
    send.set_token(next_token);
    send.set_source_ip("127.0.0.1");
    send.set_streams(streams);
    for (uint32_t g : union_below) send.add_chunks(g);
    round.send = source.Send(send).status();
    for (StageEndpoints* node : nodes) {
      v1::StageFinishRequest finish;
      finish.set_transfer_id(id);
      finish.set_wait(true);
      absl::StatusOr<v1::StageFinishResponse> f = node->Finish(finish);
      EXPECT_TRUE(f.ok()) << f.status();
      round.finished.push_back(f.ok() ? *f : v1::StageFinishResponse());
    }
    return round;
  }

  void ExpectIdentical(const std::string& prefix) {
    for (const char* f : {"weights.bin", "sub/config.json", "empty"}) {
      EXPECT_EQ(ReadAll(absl::StrCat(prefix, "/model/", f)),
                ReadAll(absl::StrCat(root_, "/src/", f)))
          << prefix << " " << f;
    }
  }

  std::string root_;
  uint32_t chunk_ = kChunk;
};

// Whole chunks are written with O_DIRECT: a staged model does not sit in the receiver's page
// cache (on a Spark, memory its GPU shares). Only the file's last, partial chunk may.
TEST_F(StageTransferTest, WholeChunksAreWrittenPastThePageCache) {
  struct statfs fs {};
  ASSERT_EQ(::statfs(root_.c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) {
    GTEST_SKIP() << root_ << " is a tmpfs, whose pages are its storage; O_DIRECT needs a disk";
  }
  {
    const std::string probe = root_ + "/direct-probe";
    UniqueFd fd(::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600));
    if (!fd.valid()) {
      GTEST_SKIP() << "the file system of " << root_ << " refuses O_DIRECT ("
                   << std::strerror(errno) << "); staging writes through the page cache there";
    }
  }
  StageEndpoints source({.node_name = "src"});
  StageEndpoints n1({.node_name = "n1", .prefix = root_ + "/n1"});
  Round round = Run(source, {&n1}, "t1");
  ASSERT_TRUE(round.send.ok()) << round.send;
  ASSERT_EQ(round.finished[0].chunks_missing(), 0u);
  // Residency before anything reads the copy.
  const std::string copy = root_ + "/n1/model/weights.bin";
  UniqueFd fd(::open(copy.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  const size_t size = 3 * kChunk + 123;
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(map, MAP_FAILED);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  ASSERT_EQ(::mincore(map, size, resident.data()), 0);
  ::munmap(map, size);
  size_t cached = 0;
  for (unsigned char r : resident) cached += r & 1;
  EXPECT_LE(cached, 1u) << "of " << resident.size() << " pages (3 whole chunks and a tail)";
  ExpectIdentical(root_ + "/n1");
}

TEST_F(StageTransferTest, AChainCopiesEveryFileToEveryNodeAndARerunMovesNothing) {
  StageEndpoints source({.node_name = "src"});
  StageEndpoints n1({.node_name = "n1", .prefix = root_ + "/n1", .cache_dir = root_ + "/c1"});
  StageEndpoints n2({.node_name = "n2", .prefix = root_ + "/n2", .cache_dir = root_ + "/c2"});
  Round first = Run(source, {&n1, &n2}, "t1");
  ASSERT_TRUE(first.send.ok()) << first.send;
  for (const v1::StageFinishResponse& f : first.finished) {
    EXPECT_EQ(f.error(), "");
    EXPECT_EQ(f.chunks_missing(), 0u);
    EXPECT_EQ(f.files_completed(), 3u);
    EXPECT_EQ(f.bytes_written(), 3 * kChunk + 123 + 8);
  }
  ExpectIdentical(root_ + "/n1");
  ExpectIdentical(root_ + "/n2");
  EXPECT_FALSE(std::filesystem::exists(root_ + "/n1/model/.weights.bin.fleet-partial"));

  Round second = Run(source, {&n1, &n2}, "t2");
  ASSERT_TRUE(second.send.ok()) << second.send;
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(second.prepared[k].needed_size(), 0);
    EXPECT_EQ(second.finished[k].bytes_received(), 0u);
    EXPECT_EQ(second.finished[k].files_completed(), 0u);
  }
}

// Preflight's model probe hashes through the receiver's manifest cache, which the transfer
// filled as it renamed each verified file into place: its first probe reads no content. The
// probe's chunk size is staging's own, so this case copies with 8 MiB chunks.
TEST_F(StageTransferTest, AStagedTreeIsProbedWithoutReadingItAndMatchesTheSource) {
  chunk_ = kStageChunkBytes;
  std::string big(kStageChunkBytes + 4321, '\0');
  std::mt19937 rng(11);
  for (char& c : big) c = static_cast<char>(rng());
  Write("weights.bin", big);
  StageEndpoints source({.node_name = "src"});
  StageEndpoints n1({.node_name = "n1", .prefix = root_ + "/n1", .cache_dir = root_ + "/c1"});
  Round round = Run(source, {&n1}, "t1");
  ASSERT_TRUE(round.send.ok()) << round.send;
  ASSERT_EQ(round.finished[0].chunks_missing(), 0u);

  auto probe = [](const std::string& path, const std::string& cache_dir) {
    ProbeContext ctx{.node_name = "n1", .cache_dir = cache_dir};
    ctx.request.add_model_paths(path);
    ctx.request.set_hash_models(true);
    v1::NodeProbe out;
    ProbeArtifacts(ctx, &out);
    return out.models_size() == 1 ? out.models(0) : v1::ModelProbe();
  };
  v1::ModelProbe staged = probe(root_ + "/n1/model", root_ + "/c1");
  EXPECT_EQ(staged.error(), "");
  EXPECT_TRUE(staged.from_cache());
  EXPECT_EQ(staged.sha256(), Manifest().tree_sha256());
  v1::ModelProbe source_probe = probe(root_ + "/src", root_ + "/c0");
  EXPECT_FALSE(source_probe.from_cache());
  EXPECT_EQ(source_probe.sha256(), staged.sha256());
}

TEST_F(StageTransferTest, ACorruptedChunkIsRejectedByEveryNodeAndTheNextRoundFillsIt) {
  StageEndpoints source({.node_name = "src", .corrupt_chunks = 1});
  StageEndpoints n1({.node_name = "n1", .prefix = root_ + "/n1"});
  StageEndpoints n2({.node_name = "n2", .prefix = root_ + "/n2"});
  // One stream, so the first chunk sent (the one corrupted) is global chunk 0; with several,
  // whichever stream writes first decides.
  Round first = Run(source, {&n1, &n2}, "t1", /*streams=*/1);
  ASSERT_TRUE(first.send.ok()) << first.send;
  EXPECT_EQ(first.finished[0].chunks_rejected(), 1u);
  EXPECT_EQ(first.finished[0].chunks_missing(), 1u);
  // n1 forwarded it as it came (cut-through); n2 checked it for itself.
  EXPECT_EQ(first.finished[1].chunks_rejected(), 1u);
  EXPECT_EQ(first.finished[1].chunks_missing(), 1u);
  // The first chunk sent is global chunk 0: sub/config.json ("empty" has none), which stays
  // under its partial name only.
  EXPECT_FALSE(std::filesystem::exists(root_ + "/n2/model/sub/config.json"));
  EXPECT_TRUE(std::filesystem::exists(root_ + "/n2/model/sub/.config.json.fleet-partial"));
  EXPECT_TRUE(std::filesystem::exists(root_ + "/n2/model/weights.bin"));

  Round second = Run(source, {&n1, &n2}, "t2");
  ASSERT_TRUE(second.send.ok()) << second.send;
  EXPECT_EQ(second.prepared[0].needed_size(), 1);
  EXPECT_EQ(second.finished[1].bytes_received(), 8u);
  EXPECT_EQ(second.finished[1].chunks_missing(), 0u);
  ExpectIdentical(root_ + "/n1");
  ExpectIdentical(root_ + "/n2");
}

TEST_F(StageTransferTest, AChangedFileIsPatchedChunkByChunk) {
  StageEndpoints source({.node_name = "src"});
  StageEndpoints n1({.node_name = "n1", .prefix = root_ + "/n1"});
  ASSERT_TRUE(Run(source, {&n1}, "t1").send.ok());
  std::string big = ReadAll(root_ + "/src/weights.bin");
  big[kChunk + 5] ^= 0x40;
  Write("weights.bin", big);
  Round second = Run(source, {&n1}, "t2");
  ASSERT_TRUE(second.send.ok());
  EXPECT_EQ(second.prepared[0].needed_size(), 1);
  EXPECT_EQ(second.finished[0].bytes_received(), kChunk);
  ExpectIdentical(root_ + "/n1");
}

TEST_F(StageTransferTest, NoSpaceIsRefusedBeforeTheFirstByte) {
  StageEndpoints n1({.node_name = "n1", .prefix = "/proc/self"});
  v1::StagePrepareRequest prepare;
  prepare.set_transfer_id("t");
  *prepare.mutable_manifest() = Manifest();
  prepare.set_dest("/model");
  prepare.set_token(std::string(32, 'a'));
  prepare.set_bind_ip("127.0.0.1");
  prepare.set_peer_ip("127.0.0.1");
  prepare.set_streams(1);
  absl::Status st = n1.Prepare(prepare).status();
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("node n1: /proc/self/model has 0 bytes free"));
}

TEST_F(StageTransferTest, ADataPortRefusesAWrongToken) {
  StageEndpoints source({.node_name = "src"});
  StageEndpoints n1({.node_name = "n1", .prefix = root_ + "/n1"});
  v1::StagePrepareRequest prepare;
  prepare.set_transfer_id("t");
  *prepare.mutable_manifest() = Manifest();
  prepare.set_dest("/model");
  prepare.set_token(std::string(32, 'a'));
  prepare.set_bind_ip("127.0.0.1");
  prepare.set_peer_ip("127.0.0.1");
  prepare.set_streams(1);
  absl::StatusOr<v1::StagePrepareResponse> p = n1.Prepare(prepare);
  ASSERT_TRUE(p.ok()) << p.status();
  v1::StageSendRequest send;
  *send.mutable_manifest() = prepare.manifest();
  send.set_target(absl::StrCat("127.0.0.1:", p->port()));
  send.set_token(std::string(32, 'b'));
  send.set_streams(1);
  for (uint32_t g : p->needed()) send.add_chunks(g);
  // The sender may fill socket buffers before it sees the close; what counts is that the
  // receiver took nothing.
  (void)source.Send(send);
  v1::StageFinishRequest progress;
  progress.set_transfer_id("t");
  absl::StatusOr<v1::StageFinishResponse> got = n1.Finish(progress);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->bytes_received(), 0u);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/n1/model/weights.bin"));
}

}  // namespace
}  // namespace fleet::agent
