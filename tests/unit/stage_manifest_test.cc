// Staging manifests on a temp directory with 4 KiB chunks: chunk hashes and the tree hash, the
// (path, size, mtime) cache that spares re-reading, and what a receiver refuses.
#include <sched.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/stage/manifest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet::agent {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kChunk = 4096;

class StageManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/stage_manifest_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    model_ = root_ + "/model";
    std::filesystem::create_directories(model_ + "/sub");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::string& relative, const std::string& content) {
    std::ofstream(absl::StrCat(model_, "/", relative), std::ios::binary) << content;
  }
  // Gives the file a fixed mtime, so a rewrite with the same size and mtime fools the cache.
  void SetMtime(const std::string& relative, time_t seconds) {
    timeval times[2] = {{seconds, 0}, {seconds, 0}};
    ASSERT_EQ(::utimes(absl::StrCat(model_, "/", relative).c_str(), times), 0);
  }
  ManifestOptions Options() { return {.cache_dir = root_ + "/cache", .chunk_bytes = kChunk}; }

  std::string root_;
  std::string model_;
};

TEST_F(StageManifestTest, ListsFilesSortedWithModesAndChunkHashes) {
  Write("b.safetensors", std::string(2 * kChunk + 10, 'b'));
  Write("sub/config.json", "{}");
  Write("empty", "");
  ::chmod(absl::StrCat(model_, "/sub/config.json").c_str(), 0640);
  absl::StatusOr<ScannedTree> tree = BuildManifest(model_, Options());
  ASSERT_TRUE(tree.ok()) << tree.status();
  const v1::StageManifest& m = tree->manifest;
  ASSERT_EQ(m.files_size(), 3);
  EXPECT_EQ(m.files(0).path(), "b.safetensors");
  EXPECT_EQ(m.files(1).path(), "empty");
  EXPECT_EQ(m.files(2).path(), "sub/config.json");
  EXPECT_EQ(m.files(2).mode(), 0640u);
  ASSERT_EQ(m.files(0).chunk_sha256_size(), 3);
  EXPECT_EQ(m.files(0).chunk_sha256(0), Sha256(std::string(kChunk, 'b')));
  EXPECT_EQ(m.files(0).chunk_sha256(2), Sha256(std::string(10, 'b')));
  EXPECT_EQ(m.files(1).chunk_sha256_size(), 0);
  EXPECT_EQ(m.total_bytes(), 2 * kChunk + 12);
  EXPECT_EQ(m.tree_sha256(), TreeSha256(m));
  EXPECT_TRUE(ValidateManifest(m).ok());
  EXPECT_FALSE(tree->from_cache);
  // A known vector: the SHA-256 of "abc".
  EXPECT_EQ(HexOf(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(StageManifestTest, ASecondScanReadsNoContentWhileSizeAndMtimeHold) {
  Write("w.bin", std::string(kChunk, 'a'));
  SetMtime("w.bin", 1'000'000);
  absl::StatusOr<ScannedTree> first = BuildManifest(model_, Options());
  ASSERT_TRUE(first.ok()) << first.status();
  // Same size and mtime, other bytes: the cache vouches for the old hashes, which is the
  // documented key (path, size, mtime) at work.
  Write("w.bin", std::string(kChunk, 'z'));
  SetMtime("w.bin", 1'000'000);
  absl::StatusOr<ScannedTree> second = BuildManifest(model_, Options());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->from_cache);
  EXPECT_EQ(second->manifest.tree_sha256(), first->manifest.tree_sha256());
  // A new mtime: re-read.
  SetMtime("w.bin", 2'000'000);
  absl::StatusOr<ScannedTree> third = BuildManifest(model_, Options());
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_FALSE(third->from_cache);
  EXPECT_NE(third->manifest.tree_sha256(), first->manifest.tree_sha256());
}

// `fleet stage cancel` during a first scan: the scan stops before its next chunk, Cancelled, and
// the files hashed whole by then are cached, so the next scan reads only the rest.
TEST_F(StageManifestTest, ACancelledScanStopsAndTheNextOneReadsOnlyWhatWasLeft) {
  for (const char* name : {"a.bin", "b.bin", "c.bin"}) Write(name, std::string(3 * kChunk, *name));
  std::atomic<int> asked = 0;
  ManifestOptions options = Options();
  options.cancelled = [&] { return ++asked > 3; };  // a.bin's 3 chunks, then cancelled
  absl::StatusOr<ScannedTree> stopped = BuildManifest(model_, options);
  EXPECT_TRUE(absl::IsCancelled(stopped.status())) << stopped.status();
  EXPECT_THAT(std::string(stopped.status().message()), HasSubstr(model_));
  // b.bin's hashing threads (up to one per chunk) each ask once more and stop; c.bin is not
  // opened.
  EXPECT_LE(asked.load(), 3 + 3);

  asked = 0;
  options.cancelled = [&] { return ++asked < 0; };
  absl::StatusOr<ScannedTree> resumed = BuildManifest(model_, options);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(asked.load(), 6) << "b.bin and c.bin read, a.bin from the cache";
  absl::StatusOr<ScannedTree> uncached = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(uncached.ok()) << uncached.status();
  EXPECT_EQ(resumed->manifest.tree_sha256(), uncached->manifest.tree_sha256());
}

TEST_F(StageManifestTest, TheTreeHashCoversNamesContentAndModes) {
  Write("a", "one");
  absl::StatusOr<ScannedTree> base = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(base.ok());
  ::chmod(absl::StrCat(model_, "/a").c_str(), 0600);
  absl::StatusOr<ScannedTree> mode = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(mode.ok());
  EXPECT_NE(mode->manifest.tree_sha256(), base->manifest.tree_sha256());
  std::filesystem::rename(model_ + "/a", model_ + "/b");
  ::chmod(absl::StrCat(model_, "/b").c_str(), base->manifest.files(0).mode());
  absl::StatusOr<ScannedTree> renamed = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(renamed.ok());
  EXPECT_NE(renamed->manifest.tree_sha256(), base->manifest.tree_sha256());
}

TEST_F(StageManifestTest, PartialCopiesAreNotListed) {
  Write("a", "x");
  Write(".b.fleet-partial", "half");
  absl::StatusOr<ScannedTree> tree = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(tree.ok());
  ASSERT_EQ(tree->manifest.files_size(), 1);
  EXPECT_EQ(tree->manifest.files(0).path(), "a");
}

TEST_F(StageManifestTest, BadPathsAreNamed) {
  EXPECT_THAT(BuildManifest("models/x", {}).status().message(), HasSubstr("must be absolute"));
  EXPECT_TRUE(absl::IsNotFound(BuildManifest(root_ + "/absent", {}).status()));
}

TEST_F(StageManifestTest, AReceiverRefusesManifestsThatEscapeOrDisagree) {
  Write("a", std::string(kChunk + 1, 'a'));
  absl::StatusOr<ScannedTree> tree = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(tree.ok());
  v1::StageManifest escape = tree->manifest;
  escape.mutable_files(0)->set_path("../etc/passwd");
  escape.set_tree_sha256(TreeSha256(escape));
  EXPECT_THAT(ValidateManifest(escape).message(), HasSubstr("leaves the destination"));
  v1::StageManifest short_list = tree->manifest;
  short_list.mutable_files(0)->mutable_chunk_sha256()->RemoveLast();
  EXPECT_THAT(ValidateManifest(short_list).message(), HasSubstr("has 1 chunk hashes"));
  v1::StageManifest forged = tree->manifest;
  forged.mutable_files(0)->set_chunk_sha256(0, Sha256("other"));
  EXPECT_THAT(ValidateManifest(forged).message(), HasSubstr("tree hash"));
}

TEST_F(StageManifestTest, ChunkIndexNumbersChunksAcrossFiles) {
  Write("a", std::string(kChunk + 1, 'a'));
  Write("b", "");
  Write("c", std::string(kChunk, 'c'));
  absl::StatusOr<ScannedTree> tree = BuildManifest(model_, {.chunk_bytes = kChunk});
  ASSERT_TRUE(tree.ok());
  ChunkIndex index(tree->manifest);
  ASSERT_EQ(index.size(), 3u);
  EXPECT_EQ(index.at(1).file, 0u);
  EXPECT_EQ(index.at(1).offset, kChunk);
  EXPECT_EQ(index.at(1).length, 1u);
  EXPECT_EQ(index.at(2).file, 2u);
  EXPECT_EQ(index.first_of(2), 2u);
  // HashFileChunks of a shorter (partial) file: its whole chunks only.
  absl::StatusOr<std::vector<std::string>> partial =
      HashFileChunks(model_ + "/a", 3 * kChunk, kChunk);
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->size(), 1u);
}

TEST_F(StageManifestTest, ChunksHashedOnSeveralThreadsKeepTheirOrder) {
  // 37 chunks, each of its own bytes, the last one short: every hash in its place whatever
  // thread computed it.
  std::string content;
  for (int c = 0; c < 37; ++c)
    content += std::string(c == 36 ? 100 : kChunk, 'A' + c % 26 + c / 26);
  Write("many", content);
  absl::StatusOr<std::vector<std::string>> hashes =
      HashFileChunks(model_ + "/many", content.size(), kChunk);
  ASSERT_TRUE(hashes.ok()) << hashes.status();
  ASSERT_EQ(hashes->size(), 37u);
  for (size_t c = 0; c < 37; ++c) {
    EXPECT_EQ((*hashes)[c], Sha256(absl::string_view(content).substr(c * kChunk, kChunk)))
        << "chunk " << c;
  }
  // Read as a partial copy 5 chunks short of a longer file: the 36 whole chunks.
  absl::StatusOr<std::vector<std::string>> partial =
      HashFileChunks(model_ + "/many", 41 * kChunk, kChunk);
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->size(), 36u);
}

TEST(UsableCoresTest, CountsTheThreadsAffinityNotTheMachinesCores) {
  cpu_set_t all;
  ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
  EXPECT_EQ(UsableCores(), static_cast<uint32_t>(CPU_COUNT(&all)));
  // Pinned to one core (as `taskset -c 0` or a one-CPU cpuset would), one is usable.
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &all)) {
      CPU_SET(c, &one);
      break;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  EXPECT_EQ(UsableCores(), 1u);
  ASSERT_EQ(sched_setaffinity(0, sizeof all, &all), 0);
}

}  // namespace
}  // namespace fleet::agent
