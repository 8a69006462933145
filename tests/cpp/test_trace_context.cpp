// W3C traceparent: what is accepted, what starts a new trace, and the ratio sampler's bound.
#include <gtest/gtest.h>

#include "core/trace_context.hpp"

namespace vllm_router {
namespace {

constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceParent, ParsesAValidHeader) {
    const auto p = parse_traceparent(kValid);
    ASSERT_TRUE(p);
    EXPECT_EQ(to_hex(p->trace_id.data(), 16), "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_EQ(to_hex(p->parent_id.data(), 8), "00f067aa0ba902b7");
    EXPECT_EQ(p->flags, 1);
    EXPECT_EQ(format_traceparent(p->trace_id, p->parent_id, p->flags), kValid);
    char written[kTraceparentSize];
    write_traceparent(written, p->trace_id, p->parent_id, p->flags);
    EXPECT_EQ(std::string_view(written, sizeof written), kValid);
    EXPECT_TRUE(parse_traceparent(std::string(" ") + kValid + "\t"));
}

TEST(TraceParent, RefusesWhatTheSpecRefuses) {
    for (const char* bad : {
             "",
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",             // no flags
             "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",          // upper case
             "00-00000000000000000000000000000000-00f067aa0ba902b7-01",          // zero trace id
             "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",          // zero parent id
             "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",          // version ff
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",    // v00 is exactly 55
             "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",          // separators
             "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",          // not hex
         }) {
        EXPECT_FALSE(parse_traceparent(bad)) << bad;
    }
    // A later version may carry more fields after a dash; the first four are read.
    EXPECT_TRUE(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
    EXPECT_FALSE(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01future"));
}

TEST(TraceRatio, ComparesTheLow64BitsWithRatioTimesTwoToThe64) {
    TraceId id{};
    id[8] = 0x7f;  // low 64 bits 0x7f00...: just under half
    for (int i = 9; i < 16; ++i) id[i] = 0xff;
    EXPECT_TRUE(sampled_by_ratio(id, 0.5));
    id[8] = 0x80;
    for (int i = 9; i < 16; ++i) id[i] = 0;  // exactly 2^63: the bound itself is not below it
    EXPECT_FALSE(sampled_by_ratio(id, 0.5));
    EXPECT_TRUE(sampled_by_ratio(id, 1.0));
    EXPECT_FALSE(sampled_by_ratio(TraceId{}, 0.0));
    // The high 64 bits do not matter.
    TraceId high{};
    high[0] = 0xff;
    EXPECT_TRUE(sampled_by_ratio(high, 1e-9));
}

}  // namespace
}  // namespace vllm_router
