// Request statistics: histogram buckets and the sliding window, with a fake clock.
#include <gtest/gtest.h>

#include <algorithm>
#include <span>

#include "core/stats.hpp"

namespace vllm_router {
namespace {

constexpr double kBounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25};

TEST(StatsHistogram, BucketsAndSums) {
    Histogram h(kBounds);
    for (double v : {0.0001, 0.0005, 0.003, 0.2, 100.0}) h.observe(v);
    h.observe(-1);  // ignored
    EXPECT_EQ(h.count(), 5u);
    EXPECT_DOUBLE_EQ(h.sum(), 0.0001 + 0.0005 + 0.003 + 0.2 + 100.0);
    EXPECT_EQ(h.counts()[0], 2u);   // <= 0.5 ms (a bound is inclusive)
    EXPECT_EQ(h.counts()[3], 1u);   // (2.5 ms, 5 ms]
    EXPECT_EQ(h.counts()[8], 1u);   // (0.1 s, 0.25 s]
    EXPECT_EQ(h.counts().back(), 1u);
    Histogram other(kBounds);
    other.observe(0.2);
    h.merge(other);
    EXPECT_EQ(h.counts()[8], 2u);
    EXPECT_EQ(h.count(), 6u);
}

TEST(StatsHistogram, TheRoutersSetsIncreaseAndReachMinutes) {
    for (std::span<const double> set : {std::span<const double>(buckets::request_duration),
                                        std::span<const double>(buckets::time_to_first_token),
                                        std::span<const double>(buckets::inter_token_latency)}) {
        EXPECT_LE(set.size(), Histogram::kMaxBounds);
        EXPECT_TRUE(std::is_sorted(set.begin(), set.end()));
        EXPECT_EQ(std::adjacent_find(set.begin(), set.end()), set.end());
    }
    EXPECT_GE(std::span(buckets::request_duration).back(), 600.0);
    Histogram h(buckets::request_duration);
    h.observe(400);  // a long generation lands in a bucket, not only in +Inf
    EXPECT_EQ(h.counts().back(), 0u);
}

TEST(StatsWindow, CountsOnlyTheWindow) {
    StatsWindow w(10);
    for (int second = 0; second < 30; ++second)
        for (int i = 0; i < second; ++i) w.record(1000.0 + second + 0.5, {0.1, -1, 0, 0, true});
    // At t=1029.5 the window holds seconds 1020..1029: 20 + 21 + ... + 29 requests.
    const auto t = w.totals(1029.5);
    EXPECT_EQ(t.requests, static_cast<std::uint64_t>((20 + 29) * 10 / 2));
    const auto s = summarize(t, w.window_seconds());
    EXPECT_NEAR(s.qps, 24.5, 1e-9);
    EXPECT_NEAR(s.avg_latency, 0.1, 1e-9);
    // Long after, nothing is left.
    EXPECT_EQ(w.totals(5000).requests, 0u);
}

TEST(StatsWindow, MemoryIsBoundedForLongWindows) {
    StatsWindow w(3600);
    EXPECT_LE(w.slot_count(), StatsWindow::kMaxBuckets + 1);
    for (int i = 0; i < 100000; ++i) w.record(i * 0.05, {0.01, 0.005, 0.02, 4, i % 10 != 0});
    const auto s = summarize(w.totals(100000 * 0.05), w.window_seconds());
    EXPECT_NEAR(s.qps, 20, 1.0);  // 20 requests a second
    EXPECT_NEAR(s.error_rate, 0.1, 0.01);
    EXPECT_NEAR(s.avg_ttft, 0.005, 1e-9);
    EXPECT_NEAR(s.avg_itl, 0.005, 1e-9);
}

TEST(StatsWindow, TotalsOfSeveralThreadsAdd) {
    StatsWindow a(60), b(60);
    a.record(10, {1.0, 0.5, 0, 0, true});
    b.record(10, {3.0, -1, 0, 0, false});
    WindowTotals t = a.totals(10);
    t.add(b.totals(10));
    const auto s = summarize(t, 60);
    EXPECT_EQ(s.requests, 2u);
    EXPECT_DOUBLE_EQ(s.avg_latency, 2.0);
    EXPECT_DOUBLE_EQ(s.avg_ttft, 0.5);
    EXPECT_DOUBLE_EQ(s.error_rate, 0.5);
}

}  // namespace
}  // namespace vllm_router
