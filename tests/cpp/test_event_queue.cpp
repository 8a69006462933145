// The queue of log events to Python: bounded, and what it drops is counted (for /metrics).
#include <gtest/gtest.h>

#include "net/bridge.hpp"

namespace vllm_router {
namespace {

TEST(EventQueue, DropsAndCountsWhatDoesNotFit) {
    EventQueue q(3);
    for (int i = 0; i < 5; ++i) q.push(make_event(20, "", "event " + std::to_string(i)));
    const auto first = q.drain();
    ASSERT_EQ(first.size(), 3u);
    EXPECT_EQ(first.front().message, "event 0");  // the oldest are kept
    EXPECT_EQ(q.dropped(), 2u);
    q.push(make_event(20, "", "after"));  // room again once drained
    EXPECT_EQ(q.drain().size(), 1u);
    EXPECT_EQ(q.dropped(), 2u);
}

}  // namespace
}  // namespace vllm_router
