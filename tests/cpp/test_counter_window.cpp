// The prefix-cache hit rate over a window of cumulative counters, with a fake clock.
#include <gtest/gtest.h>

#include <limits>

#include "core/counter_window.hpp"

namespace vllm_router {
namespace {

TEST(CounterWindow, RateOfTheIncreasesAcrossTheWindow) {
    CounterWindow w(10);
    EXPECT_EQ(w.rate(0), 0.0);  // nothing seen
    w.add(0, 100, 50);          // all-time ratio 0.5: not what the window shows
    w.add(1, 200, 50);
    w.add(2, 300, 150);
    // Since t=0: 200 queries, 100 hits.
    EXPECT_DOUBLE_EQ(w.rate(2), 0.5);
    w.add(3, 400, 250);
    EXPECT_DOUBLE_EQ(w.rate(3), 200.0 / 300.0);
}

TEST(CounterWindow, IdleEngineShowsZeroOnceTheWindowPassed) {
    CounterWindow w(5);
    w.add(0, 0, 0);
    w.add(1, 100, 90);
    EXPECT_DOUBLE_EQ(w.rate(1), 0.9);
    // Scrapes go on, nothing changes: within the window the traffic still counts...
    for (int t = 2; t <= 5; ++t) w.add(t, 100, 90);
    EXPECT_DOUBLE_EQ(w.rate(5), 0.9);
    // ...and once its last query is older than the window, the rate is 0, not the last value.
    for (int t = 6; t <= 7; ++t) w.add(t, 100, 90);
    EXPECT_EQ(w.rate(7), 0.0);
}

TEST(CounterWindow, BaseIsTheNewestSampleAtOrBeforeTheWindowStart) {
    CounterWindow w(10);
    w.add(0, 0, 0);
    w.add(5, 10, 10);   // 10 queries, all hits
    w.add(12, 20, 10);  // 10 queries, no hits
    // Window (2, 12]: base is the sample at t=0, the newest at or before t=2.
    EXPECT_DOUBLE_EQ(w.rate(12), 0.5);
    w.add(15, 20, 10);
    // Window (5, 15]: base is t=5.
    EXPECT_DOUBLE_EQ(w.rate(15), 0.0);
    EXPECT_LE(w.size(), 3u);
}

TEST(CounterWindow, EngineRestartStartsAfresh) {
    CounterWindow w(60);
    w.add(0, 1000, 900);
    w.add(1, 2000, 1000);
    w.add(2, 10, 0);  // the engine came back with fresh counters
    EXPECT_EQ(w.size(), 1u);
    EXPECT_EQ(w.rate(2), 0.0);
    w.add(3, 110, 100);
    EXPECT_DOUBLE_EQ(w.rate(3), 1.0);
}

TEST(CounterWindow, BadValuesNeverPoisonTheRate) {
    CounterWindow w(60);
    w.add(0, 0, 0);
    w.add(1, std::numeric_limits<double>::quiet_NaN(), 5);
    w.add(2, std::numeric_limits<double>::infinity(), 5);
    EXPECT_EQ(w.size(), 1u);
    w.add(3, 10, 30);  // more hits than queries: clamped
    EXPECT_EQ(w.rate(3), 1.0);
}

TEST(CounterWindow, MemoryStaysBounded) {
    CounterWindow w(1e9);  // a window no scrape history fills
    for (int i = 0; i < 3 * static_cast<int>(CounterWindow::kMaxSamples); ++i) w.add(i, i, i / 2);
    EXPECT_EQ(w.size(), CounterWindow::kMaxSamples);
}

}  // namespace
}  // namespace vllm_router
