// The streaming inspection of spooled bodies gives inspect_json's answers, whatever the pieces.
#include <gtest/gtest.h>

#include <string>

#include "core/inspect.hpp"
#include "core/json_scan.hpp"

namespace vllm_router {
namespace {

RequestInfo scan(std::string_view body, std::size_t split) {
    JsonScanner s;
    s.feed(body.substr(0, split));
    s.feed(body.substr(split));
    return s.finish();
}

RequestInfo scan_bytewise(std::string_view body) {
    JsonScanner s;
    for (char c : body) s.feed(std::string_view(&c, 1));
    return s.finish();
}

const char* const kBodies[] = {
    R"({"model":"llama","messages":[{"role":"user","content":"hi \"x\" } ] {"}],"stream":true,"user":"u-1"})",
    R"( { "model" : "m" , "stream" : false } )",
    R"({"model":null,"prompt":"x"})",
    R"({"model":"a","model":"b"})",
    R"({"mo\u0064el":"\u006dodel-\u00e9","x":{"model":"nested"}})",
    R"({"stream":null,"n":1.5e3,"ok":true,"none":null,"arr":[1,[2,{"3":"]"}]]})",
    R"({})",
    R"({"user":"x","user":7})",
    "[1,2]",
    "",
    "   ",
    R"({"model":1})",
    R"({"model":{"a":1}})",
    R"({"stream":"yes"})",
    R"({"stream":[true]})",
    R"({"a":1,})",
    R"({"a":1)",
    R"({"a":"unterminated)",
    R"({"a":1}x)",
    R"({"a":1}{})",
    R"({"a" 1})",
    R"({,"a":1})",
    R"({"a":"bad \q escape"})",
};

TEST(JsonScan, AgreesWithInspectJsonAtEverySplitPoint) {
    for (std::string_view body : kBodies) {
        const RequestInfo want = inspect_json(body);
        for (std::size_t split = 0; split <= body.size(); ++split) {
            const RequestInfo got = scan(body, split);
            ASSERT_EQ(got.valid, want.valid) << body << " split " << split << ": " << got.error << " / " << want.error;
            if (!want.valid) {
                EXPECT_FALSE(got.error.empty()) << body;
                continue;
            }
            EXPECT_EQ(got.model, want.model) << body;
            EXPECT_EQ(got.has_model, want.has_model) << body;
            EXPECT_EQ(got.stream, want.stream) << body;
            EXPECT_EQ(got.user, want.user) << body;
        }
        const RequestInfo bytewise = scan_bytewise(body);
        EXPECT_EQ(bytewise.valid, want.valid) << body;
        EXPECT_EQ(bytewise.model, want.model) << body;
    }
}

TEST(JsonScan, ControlCharactersAreCheckedOnlyWhereValuesAreKept) {
    // Skipped strings are scanned for their end only (memchr over megabytes of prompt): a raw
    // control character there is the engine's to refuse, as any other error inside them.
    EXPECT_TRUE(scan_bytewise("{\"a\":\"bad\x01" "char\"}").valid);
    EXPECT_FALSE(scan_bytewise("{\"model\":\"bad\x01" "char\"}").valid);
    EXPECT_FALSE(scan_bytewise("{\"mo\x01" "del\":\"m\"}").valid);
}

TEST(JsonScan, HoldsOnlyWhatItKeeps) {
    // A 20 MiB prompt goes through without being kept.
    JsonScanner s;
    s.feed(R"({"model":"m","prompt":")");
    const std::string chunk(1 << 20, 'a');
    for (int i = 0; i < 20; ++i) s.feed(chunk);
    s.feed(R"("})");
    const RequestInfo info = s.finish();
    EXPECT_TRUE(info.valid);
    EXPECT_EQ(info.model, "m");
}

TEST(JsonScan, AModelNameTooLongIsInvalid) {
    JsonScanner s;
    s.feed(R"({"model":")" + std::string(JsonScanner::kMaxValue + 1, 'm') + R"("})");
    EXPECT_FALSE(s.finish().valid);
}

}  // namespace
}  // namespace vllm_router
