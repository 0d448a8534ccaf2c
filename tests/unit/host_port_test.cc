// HOST:PORT parsing and joining: IPv4, names, bracketed IPv6, optional ports and bad input.
#include "common/host_port.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleet {
namespace {

using ::testing::HasSubstr;

TEST(HostPortTest, SplitsIpv4NamesAndBracketedIpv6) {
  absl::StatusOr<HostPort> v4 = ParseHostPort("10.0.0.2:7100");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->host, "10.0.0.2");
  EXPECT_EQ(v4->port, 7100);
  absl::StatusOr<HostPort> name = ParseHostPort("spark-1:65535");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->host, "spark-1");
  EXPECT_EQ(name->port, 65535);
  absl::StatusOr<HostPort> v6 = ParseHostPort("[fe80::1]:1");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "fe80::1");
  EXPECT_EQ(v6->port, 1);
  absl::StatusOr<HostPort> any = ParseHostPort(":7101");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->host, "");
  EXPECT_EQ(any->port, 7101);
}

TEST(HostPortTest, RejectsBadInputNamingTheProblem) {
  struct Case {
    const char* text;
    const char* problem;
  };
  for (const Case& c :
       {Case{"10.0.0.2", "no port"}, Case{"10.0.0.2:", "no port after ':'"},
        Case{"10.0.0.2:0", "from 1 to 65535"}, Case{"10.0.0.2:65536", "from 1 to 65535"},
        Case{"10.0.0.2:http", "from 1 to 65535"}, Case{"10.0.0.2:+80", "from 1 to 65535"},
        Case{"fe80::1:7100", "needs brackets"}, Case{"[fe80::1:7100", "without ']'"},
        Case{"[fe80::1]x:7100", "after ']'"}, Case{"[::1]", "no port"}}) {
    absl::StatusOr<HostPort> parsed = ParseHostPort(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.problem)) << c.text;
    EXPECT_THAT(parsed.status().message(), HasSubstr("[fe80::1]:7100")) << "the fix: " << c.text;
  }
}

TEST(HostPortTest, OptionalPortAcceptsHostsAlone) {
  for (const char* text : {"", "spark-1", "[::1]", "::1", "0.0.0.0"}) {
    absl::StatusOr<HostPort> parsed = ParseHostOptionalPort(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_EQ(parsed->port, 0) << text;
  }
  EXPECT_EQ(ParseHostOptionalPort("[::1]")->host, "::1");
  EXPECT_EQ(ParseHostOptionalPort("::1")->host, "::1");
  EXPECT_EQ(ParseHostOptionalPort("spark-1:7101")->port, 7101);
  EXPECT_EQ(ParseHostOptionalPort("127.0.0.2:0")->port, 0);
  EXPECT_EQ(ParseHostOptionalPort("127.0.0.2:0")->host, "127.0.0.2");
  EXPECT_FALSE(ParseHostOptionalPort("spark-1:x").ok());
}

TEST(HostPortTest, JoinBracketsIpv6AndRoundTrips) {
  EXPECT_EQ(JoinHostPort("10.0.0.2", 7100), "10.0.0.2:7100");
  EXPECT_EQ(JoinHostPort("fe80::1", 7100), "[fe80::1]:7100");
  EXPECT_EQ(JoinHostPort("", 7100), ":7100");
  for (const char* text : {"10.0.0.2:7100", "[fe80::1]:7100", "spark-1:1"}) {
    absl::StatusOr<HostPort> parsed = ParseHostPort(text);
    ASSERT_TRUE(parsed.ok()) << text;
    EXPECT_EQ(JoinHostPort(parsed->host, parsed->port), text);
  }
}

TEST(HostPortTest, HostOfDropsPortAndBrackets) {
  EXPECT_EQ(HostOf("10.0.0.2:7101"), "10.0.0.2");
  EXPECT_EQ(HostOf("[fe80::1]:7101"), "fe80::1");
  EXPECT_EQ(HostOf("[::]:7100"), "::");
  EXPECT_EQ(HostOf("spark-1"), "spark-1");
}

}  // namespace
}  // namespace fleet
