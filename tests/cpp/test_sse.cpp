#include "core/sse.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace vllm_router {
namespace {

const std::string vllm_stream =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},"
    "\"finish_reason\":\"stop\"}]}\n\n"
    "data: [DONE]\n\n";

std::string with_line_endings(const std::string& text, std::string_view eol) {
    std::string out;
    for (const char c : text) {
        if (c == '\n') {
            out += eol;
        } else {
            out += c;
        }
    }
    return out;
}

struct SseCase {
    std::string name;
    std::string input;
    std::size_t events;
    std::size_t data_events;
    bool done;
    std::string last_data;
};

std::vector<SseCase> sse_cases() {
    return {
        {"vllm_lf", vllm_stream, 5, 4, true, "[DONE]"},
        {"vllm_crlf", with_line_endings(vllm_stream, "\r\n"), 5, 4, true, "[DONE]"},
        {"vllm_cr", with_line_endings(vllm_stream, "\r"), 5, 4, true, "[DONE]"},
        {"bom", "\xEF\xBB\xBF" "data: a\n\ndata: b\n\n", 2, 2, false, "b"},
        {"bom_then_comment", "\xEF\xBB\xBF: hi\ndata: x\n\n", 1, 1, false, "x"},
        {"not_a_bom", "\xEF\xBB" "data: a\n\ndata: b\n\n", 1, 1, false, "b"},
        {"comments_and_fields",
         ": keep-alive\n\nevent: ping\nid: 7\nretry: 1000\n\n: c\ndata: tok\nid: 8\n\n", 1, 1,
         false, "tok"},
        {"multi_line_data", "data: first\ndata:second\ndata:  third\n\n", 1, 1, false,
         "first\nsecond\n third"},
        {"empty_data_counts", "data:\n\ndata\n\n", 2, 2, false, ""},
        {"no_trailing_blank_line", "data: a\n\ndata: [DONE]\n", 1, 1, false, "a"},
        {"done_not_exact", "data: [DONE] \n\ndata:[DONE]x\n\n", 2, 2, false, "[DONE]x"},
        {"done_no_space", "data:[DONE]\n\n", 1, 0, true, "[DONE]"},
        {"done_then_more", "data: [DONE]\n\ndata: late\n\n", 2, 1, true, "late"},
        {"mixed_endings", "data: a\r\n\ndata: b\r\r\ndata: c\n\r", 3, 3, false, "c"},
        {"cr_lf_pairs_are_one_line_end", "data: a\r\n\r\n", 1, 1, false, "a"},
        {"lf_cr_is_two_line_ends", "data: a\n\rdata: b\n\n", 2, 2, false, "b"},
        {"field_names_exact", "Data: x\ndatax: y\n data: z\n\n", 0, 0, false, ""},
        {"only_blank_lines", "\n\n\r\n\r\r", 0, 0, false, ""},
        {"empty", "", 0, 0, false, ""},
    };
}

struct Totals {
    std::size_t returned = 0;
    std::size_t events = 0;
    std::size_t data_events = 0;
    bool done = false;
    std::string last_data;
};

Totals run(const std::vector<std::string_view>& pieces) {
    SseFramer framer;
    Totals t;
    for (const auto piece : pieces) t.returned += framer.feed(piece);
    t.events = framer.events();
    t.data_events = framer.data_events();
    t.done = framer.done();
    t.last_data = framer.last_data();
    return t;
}

void expect_totals(const SseCase& c, const Totals& t, const std::string& how) {
    SCOPED_TRACE(c.name + " " + how);
    EXPECT_EQ(t.events, c.events);
    EXPECT_EQ(t.returned, c.events);
    EXPECT_EQ(t.data_events, c.data_events);
    EXPECT_EQ(t.done, c.done);
    EXPECT_EQ(t.last_data, c.last_data);
}

TEST(SseFramer, Whole) {
    for (const auto& c : sse_cases()) expect_totals(c, run({c.input}), "whole");
}

TEST(SseFramer, EverySplitPoint) {
    for (const auto& c : sse_cases()) {
        const std::string_view input = c.input;
        for (std::size_t at = 0; at <= input.size(); ++at) {
            expect_totals(c, run({input.substr(0, at), input.substr(at)}),
                          "split at " + std::to_string(at));
        }
    }
}

TEST(SseFramer, ByteByByte) {
    for (const auto& c : sse_cases()) {
        const std::string_view input = c.input;
        std::vector<std::string_view> bytes;
        for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
        expect_totals(c, run(bytes), "byte by byte");
    }
}

TEST(SseFramer, FeedReturnsEventsEndingInThePiece) {
    SseFramer framer;
    EXPECT_EQ(framer.feed("data: a\n"), 0u);
    EXPECT_EQ(framer.feed("\ndata: b\n\ndata: c\n\ndata: d"), 3u);
    EXPECT_EQ(framer.events(), 3u);
    EXPECT_EQ(framer.last_data(), "c");
    EXPECT_EQ(framer.feed("\n"), 0u);
    EXPECT_EQ(framer.feed("\r"), 1u);
    EXPECT_EQ(framer.last_data(), "d");
    // The LF after that CR ends nothing more.
    EXPECT_EQ(framer.feed("\n"), 0u);
    EXPECT_EQ(framer.feed("\n"), 0u);
    EXPECT_EQ(framer.events(), 4u);
}

TEST(SseFramer, EventBoundary) {
    struct Case {
        std::string fed;
        bool boundary;
    };
    const std::vector<Case> cases = {
        {"", true},
        {"data: a\n\n", true},
        {"data: a\r\n\r\n", true},
        {"data: a\r\r", false},
        {": keep-alive\n", true},
        {"data: a", false},
        {"data: a\n", false},
        {"data: a\r", false},
        {"event: error\n", false},
        {"data: a\n\ndata", false},
        {"\xEF\xBB", false},
        {"\xEF\xBB\xBF", true},
    };
    for (const auto& c : cases) {
        SseFramer framer(8);
        framer.feed(c.fed);
        EXPECT_EQ(framer.at_event_boundary(), c.boundary) << c.fed;
    }
    SseFramer framer(8);
    framer.feed("data: far beyond the limit");
    EXPECT_FALSE(framer.at_event_boundary());
    framer.feed("\n\n");
    EXPECT_TRUE(framer.at_event_boundary());
}

TEST(SseFramer, Reset) {
    SseFramer framer;
    framer.feed("data: [DONE]\n\ndata: partial");
    framer.reset();
    EXPECT_EQ(framer.events(), 0u);
    EXPECT_FALSE(framer.done());
    EXPECT_EQ(framer.last_data(), "");
    EXPECT_EQ(framer.feed("\xEF\xBB\xBF" "data: x\n\n"), 1u);
    EXPECT_EQ(framer.last_data(), "x");
}

TEST(SseFramer, OverlongLinesKeepFraming) {
    const std::size_t limit = 16;
    const std::string long_value(100, 'v');
    const std::string input = "data: " + long_value + "\n\n: " + long_value +
                              "\n\ndata: [DONE]" + std::string(50, ' ') + "\n\ndata: [DONE]\n\n";
    for (const std::size_t piece : {std::size_t{1}, std::size_t{7}, input.size()}) {
        SseFramer framer(limit);
        std::size_t returned = 0;
        for (std::size_t i = 0; i < input.size(); i += piece) {
            returned += framer.feed(std::string_view(input).substr(i, piece));
        }
        SCOPED_TRACE("piece size " + std::to_string(piece));
        EXPECT_EQ(returned, 3u);
        EXPECT_EQ(framer.events(), 3u);
        EXPECT_EQ(framer.data_events(), 2u);
        EXPECT_TRUE(framer.done());
    }
    SseFramer framer(limit);
    framer.feed("data: " + long_value + "\n\n");
    EXPECT_EQ(framer.last_data(), std::string(limit - 6, 'v'));
}

TEST(SseFramer, LongStreamHoldsOnlyTheCurrentEvent) {
    SseFramer framer;
    const std::string event = "data: {\"choices\":[{\"delta\":{\"content\":\"tok\"}}]}\n\n";
    std::size_t returned = 0;
    for (int i = 0; i < 100000; ++i) returned += framer.feed(event);
    returned += framer.feed("data: [DONE]\n\n");
    EXPECT_EQ(returned, 100001u);
    EXPECT_EQ(framer.data_events(), 100000u);
    EXPECT_TRUE(framer.done());
}

}  // namespace
}  // namespace vllm_router
