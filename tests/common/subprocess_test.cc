#include "common/subprocess.h"

#include <signal.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace epserve {
namespace {

TEST(Subprocess, ExitCodeAndOutput) {
  std::string out = ::testing::TempDir() + "/subprocess_out.txt";
  std::remove(out.c_str());
  auto child = Subprocess::Spawn({"/bin/sh", "-c", "echo hello; exit 3"},
                                 SubprocessOptions{true, out});
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(child->Wait(std::chrono::seconds(10)), 3);
  EXPECT_FALSE(child->running());
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "hello\n");
}

// options.env adds and replaces variables in the child only; the rest of
// the environment is inherited.
TEST(Subprocess, EnvironmentOverridesReachOnlyTheChild) {
  std::string out = ::testing::TempDir() + "/subprocess_env.txt";
  std::remove(out.c_str());
  setenv("EPSERVE_SUBPROCESS_TEST_KEEP", "kept", 1);
  setenv("EPSERVE_SUBPROCESS_TEST_REPLACE", "old", 1);
  SubprocessOptions options{true, out};
  options.env = {{"EPSERVE_SUBPROCESS_TEST_REPLACE", "new"},
                 {"EPSERVE_SUBPROCESS_TEST_ADD", "a=b"}};
  auto child = Subprocess::Spawn(
      {"/bin/sh", "-c",
       "echo \"$EPSERVE_SUBPROCESS_TEST_KEEP $EPSERVE_SUBPROCESS_TEST_REPLACE "
       "$EPSERVE_SUBPROCESS_TEST_ADD\"; env | grep -c EPSERVE_SUBPROCESS_TEST_REPLACE"},
      options);
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(child->Wait(std::chrono::seconds(10)), 0);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "kept new a=b\n1\n");
  EXPECT_STREQ(getenv("EPSERVE_SUBPROCESS_TEST_REPLACE"), "old");
  EXPECT_EQ(getenv("EPSERVE_SUBPROCESS_TEST_ADD"), nullptr);
}

TEST(Subprocess, TerminateRunningChild) {
  auto child = Subprocess::Spawn({"/bin/sleep", "30"}, SubprocessOptions{});
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(child->Wait(std::chrono::milliseconds(50)), std::nullopt);
  EXPECT_TRUE(child->running());
  EXPECT_EQ(child->Terminate(std::chrono::seconds(5)), 128 + SIGTERM);
}

TEST(Subprocess, MissingBinaryExits127) {
  auto child = Subprocess::Spawn({"/nonexistent/binary"}, SubprocessOptions{});
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(child->Wait(std::chrono::seconds(10)), 127);
}

TEST(Subprocess, EmptyArgvIsAnError) {
  EXPECT_EQ(Subprocess::Spawn({}, SubprocessOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace epserve
