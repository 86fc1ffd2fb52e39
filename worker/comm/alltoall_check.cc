#include "worker/comm/alltoall_check.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::comm {
namespace {

int32_t Value(int src, int dst, int64_t i) {
  return static_cast<int32_t>(src * 1000003 + dst * 1009 + i);
}

}  // namespace

int64_t AllToAllCheckCount(int src, int dst) { return 16 * (src + 1) + 3 * dst; }

absl::StatusOr<AllToAllCheckResult> RunAllToAllCheck(Communicator& comm) {
  const int me = comm.rank();
  const int n = comm.world_size();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<int32_t> send;
  for (int dst = 0; dst < n; ++dst) {
    send_counts[dst] = AllToAllCheckCount(me, dst);
    recv_counts[dst] = AllToAllCheckCount(dst, me);
    for (int64_t i = 0; i < send_counts[dst]; ++i) send.push_back(Value(me, dst, i));
  }
  int64_t total_recv = 0;
  for (int64_t c : recv_counts) total_recv += c;
  std::vector<int32_t> recv(static_cast<size_t>(total_recv), -1);
  RETURN_IF_ERROR(comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts,
                                 sizeof(int32_t), /*stream=*/nullptr));
  size_t pos = 0;
  for (int src = 0; src < n; ++src) {
    for (int64_t i = 0; i < recv_counts[src]; ++i, ++pos) {
      if (recv[pos] != Value(src, me, i)) {
        return absl::DataLossError(absl::StrCat("all-to-all-v check on rank ", me,
                                                ": element ", i, " from rank ", src, " is ",
                                                recv[pos], ", expected ", Value(src, me, i)));
      }
    }
  }
  return AllToAllCheckResult{send.size() * sizeof(int32_t), recv.size() * sizeof(int32_t)};
}

}  // namespace epserve::comm
