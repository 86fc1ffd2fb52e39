// The /metrics endpoint serves scrapes while another client holds a
// half-written request open, and closes that connection after the timeout.
#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace epserve {
namespace {

using Clock = std::chrono::steady_clock;

int Connect(uint16_t port, int timeout_s) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool Send(int fd, const std::string& s) {
  return write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

TEST(MetricsServer, ScrapesWhileAnotherClientHoldsAHalfWrittenRequest) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("epserve_test_total")
      .Help("t")
      .Register(*registry)
      .Add({})
      .Increment();
  auto server = MetricsServer::Start(HostPort{"127.0.0.1", 0}, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const uint16_t port = (*server)->address().port;
  ASSERT_NE(port, 0);

  // More idle clients than threads would still block; one is the attack.
  const int slow = Connect(port, 30);
  ASSERT_GE(slow, 0);
  ASSERT_TRUE(Send(slow, "GET /metrics HTTP/1.1\r\nHost: x\r\n"));  // no blank line

  const auto t0 = Clock::now();
  const int fd = Connect(port, 5);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Send(fd, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"));
  const std::string response = ReadAll(fd);
  close(fd);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_NE(response.find("epserve_test_total 1"), std::string::npos) << response;
  EXPECT_LT(took, 2.0);

  // The half-written request is dropped after the request timeout.
  const auto t1 = Clock::now();
  ReadAll(slow);  // returns when the server closes (or after 30 s)
  close(slow);
  const double held = std::chrono::duration<double>(Clock::now() - t1).count();
  EXPECT_LT(held, kMetricsRequestTimeoutMs / 1000.0 + 3.0);
}

}  // namespace
}  // namespace epserve
