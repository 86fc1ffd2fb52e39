#include "worker/moe/exchange_plan.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::moe {
namespace {

absl::Status Bad(const std::string& what, const std::string& expected, const std::string& found) {
  return absl::InvalidArgumentError(
      absl::StrCat("PlanExchange: ", what, ": expected ", expected, ", found ", found));
}

}  // namespace

absl::Status PlanExchange(absl::Span<const int64_t> counts,
                          absl::Span<const uint32_t> expert_to_rank, int rank, ExchangePlan* plan) {
  const int64_t e_count = static_cast<int64_t>(expert_to_rank.size());
  if (e_count < 1) return Bad("expert_to_rank", "at least 1 expert", "0");
  if (counts.empty() || static_cast<int64_t>(counts.size()) % e_count != 0) {
    return Bad("counts", absl::StrCat("world x ", e_count, " entries"),
               absl::StrCat(counts.size()));
  }
  const int world = static_cast<int>(static_cast<int64_t>(counts.size()) / e_count);
  if (rank < 0 || rank >= world) {
    return Bad("rank", absl::StrCat("in [0, ", world, ")"), absl::StrCat(rank));
  }
  for (int64_t e = 0; e < e_count; ++e) {
    if (expert_to_rank[e] >= static_cast<uint32_t>(world)) {
      return Bad(absl::StrCat("expert_to_rank[", e, "]"),
                 absl::StrCat("a rank in [0, ", world, ")"), absl::StrCat(expert_to_rank[e]));
    }
  }
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] < 0) {
      return Bad(absl::StrCat("counts[", i / e_count, "][", i % e_count, "]"), "at least 0",
                 absl::StrCat(counts[i]));
    }
  }

  const int64_t* c = counts.data();  // c[s * E + e]: rows rank s sends to expert e
  plan->send_counts.assign(world, 0);
  plan->recv_counts.assign(world, 0);
  plan->rows_per_rank.assign(world, 0);
  plan->rows_per_expert.assign(e_count, 0);
  for (int64_t e = 0; e < e_count; ++e) {
    const int owner = static_cast<int>(expert_to_rank[e]);
    plan->send_counts[owner] += c[rank * e_count + e];
    int64_t total = 0;
    for (int s = 0; s < world; ++s) {
      total += c[s * e_count + e];
      if (owner == rank) plan->recv_counts[s] += c[s * e_count + e];
    }
    plan->rows_per_rank[owner] += total;
    plan->rows_per_expert[e] = owner == rank ? total : 0;
  }

  // Send order: owner ascending, expert ascending within an owner; the
  // source rows are expert e's block of the local permutation, which starts
  // after this rank's rows of every lower expert.
  plan->send_blocks.clear();
  plan->send_identity = true;
  int64_t pos = 0;
  for (int owner = 0; owner < world; ++owner) {
    int64_t perm_start = 0;
    for (int64_t e = 0; e < e_count; ++e) {
      const int64_t rows = c[rank * e_count + e];
      if (static_cast<int>(expert_to_rank[e]) == owner && rows > 0) {
        plan->send_blocks.push_back({perm_start, pos, rows});
        plan->send_identity = plan->send_identity && perm_start == pos;
        pos += rows;
      }
      perm_start += rows;
    }
  }
  plan->num_sent = pos;

  // Received: source ascending, this rank's experts ascending within a
  // source. Returned: expert ascending, source ascending within an expert.
  plan->recv_cursor.resize(world);
  int64_t received = 0;
  for (int s = 0; s < world; ++s) {
    plan->recv_cursor[s] = received;
    received += plan->recv_counts[s];
  }
  if (received > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("AllToAllTokenDispatcher: rank ", rank, " received ", received,
                     " rows in one layer; expert offsets are int32"));
  }
  plan->num_received = received;
  plan->recv_blocks.clear();
  plan->recv_identity = true;
  plan->expert_offsets.assign(e_count + 1, 0);
  pos = 0;
  for (int64_t e = 0; e < e_count; ++e) {
    plan->expert_offsets[e] = static_cast<int32_t>(pos);
    if (static_cast<int>(expert_to_rank[e]) != rank) continue;
    for (int s = 0; s < world; ++s) {
      const int64_t rows = c[s * e_count + e];
      if (rows == 0) continue;
      plan->recv_blocks.push_back({plan->recv_cursor[s], pos, rows});
      plan->recv_identity = plan->recv_identity && plan->recv_cursor[s] == pos;
      plan->recv_cursor[s] += rows;
      pos += rows;
    }
  }
  plan->expert_offsets[e_count] = static_cast<int32_t>(pos);
  return absl::OkStatus();
}

absl::StatusOr<ExchangePlan> PlanExchange(absl::Span<const int64_t> counts,
                                          absl::Span<const uint32_t> expert_to_rank, int rank) {
  ExchangePlan plan;
  RETURN_IF_ERROR(PlanExchange(counts, expert_to_rank, rank, &plan));
  return plan;
}

}  // namespace epserve::moe
