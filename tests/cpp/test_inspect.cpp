#include "core/inspect.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <string>
#include <vector>

namespace vllm_router {
namespace {

constexpr std::size_t padding = simdjson::SIMDJSON_PADDING;

// Runs the in-place path on `body` followed by `padding` bytes of `filler`.
RequestInfo inspect_in_place(std::string_view body, char filler = '}') {
    std::string buffer(body);
    buffer.append(padding, filler);
    return inspect_json(buffer.data(), body.size(), buffer.size());
}

// Runs the copying path through a buffer one byte short of the padding simdjson needs.
RequestInfo inspect_short_buffer(std::string_view body) {
    std::string buffer(body);
    buffer.append(padding - 1, '}');
    return inspect_json(buffer.data(), body.size(), buffer.size());
}

struct JsonCase {
    std::string name;
    std::string body;
    bool valid;
    std::string model = "";
    bool has_model = false;
    bool stream = false;
    std::string user = "";
};

const std::string chat_body =
    R"({"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system",)"
    R"("content":"You are helpful."},{"role":"user","content":"Hi"}],"stream":true,)"
    R"("max_tokens":128,"temperature":0.7,"stream_options":{"include_usage":true},)"
    R"("user":"alice"})";

std::vector<JsonCase> json_cases() {
    return {
        {"chat", chat_body, true, "meta-llama/Llama-3.1-8B-Instruct", true, true, "alice"},
        {"empty_object", "{}", true},
        {"model_absent", R"({"prompt":"hello","max_tokens":5})", true},
        {"model_null_is_absent", R"({"model":null})", true},
        {"model_number", R"({"model":42})", false},
        {"model_array", R"({"model":["a"]})", false},
        {"model_object", R"({"model":{"name":"a"}})", false},
        {"model_bool", R"({"model":true})", false},
        {"stream_true", R"({"model":"m","stream":true})", true, "m", true, true},
        {"stream_false", R"({"model":"m","stream":false})", true, "m", true, false},
        {"stream_null", R"({"model":"m","stream":null})", true, "m", true, false},
        {"stream_string", R"({"model":"m","stream":"true"})", false},
        {"stream_number", R"({"model":"m","stream":1})", false},
        {"user_not_string_ignored", R"({"model":"m","user":7})", true, "m", true},
        {"escaped_quote", R"({"model":"a\"b"})", true, "a\"b", true},
        {"escaped_unicode", R"({"model":"caf\u00e9","user":"\u0041\n"})", true, "caf\xC3\xA9",
         true, false, "A\n"},
        {"escaped_key", R"({"mod\u0065l":"m"})", true, "m", true},
        {"whitespace", " \r\n\t{ \"model\" :\n \"m\" ,\t\"stream\" : true }\n\n ", true, "m",
         true, true},
        {"nested_model_not_picked",
         R"({"messages":[{"model":"deep","content":[{"model":"deeper"}]}],)"
         R"("metadata":{"model":"x","stream":true,"user":"u"},"stream":false})",
         true},
        {"nested_then_top", R"({"extra":{"model":"deep"},"model":"top"})", true, "top", true},
        {"duplicate_model_last_wins", R"({"model":"first","model":"second"})", true, "second",
         true},
        {"duplicate_model_null_last", R"({"model":"first","model":null})", true},
        {"model_in_string_value", R"({"prompt":"\"model\": \"fake\"","model":"real"})", true,
         "real", true},
        {"unicode_in_prompt", "{\"prompt\":\"\xE6\x97\xA5\xE6\x9C\xAC\",\"model\":\"m\"}", true,
         "m", true},
        {"trailing_garbage_word", R"({"model":"m"} x)", false},
        {"trailing_object", R"({"model":"m"}{})", false},
        {"trailing_brace", R"({"model":"m"}})", false},
        {"trailing_comma", R"({"model":"m"},)", false},
        {"missing_comma", R"({"model":"m" "stream":true})", false},
        {"missing_colon", R"({"model" "m"})", false},
        {"unquoted_key", R"({model:"m"})", false},
        {"bad_escape_in_model", R"({"model":"a\qb"})", false},
        {"invalid_utf8", "{\"model\":\"\xFF\"}", false},
        {"top_array", R"([{"model":"m"}])", false},
        {"top_number", "42", false},
        {"top_string", R"("model")", false},
        {"top_null", "null", false},
        {"empty", "", false},
        {"only_whitespace", "  \n ", false},
        {"lone_brace", "{", false},
        {"lone_close", "}", false},
    };
}

void expect_case(const JsonCase& c, const RequestInfo& info, const char* path) {
    SCOPED_TRACE(std::string(path) + " " + c.name);
    EXPECT_EQ(info.valid, c.valid) << info.error;
    if (!c.valid) {
        EXPECT_FALSE(info.error.empty());
        return;
    }
    EXPECT_TRUE(info.error.empty()) << info.error;
    EXPECT_EQ(info.model, c.model);
    EXPECT_EQ(info.has_model, c.has_model);
    EXPECT_EQ(info.stream, c.stream);
    EXPECT_EQ(info.user, c.user);
}

TEST(InspectJson, TableOnEveryPath) {
    for (const auto& c : json_cases()) {
        expect_case(c, inspect_json(c.body), "copy");
        expect_case(c, inspect_in_place(c.body), "in-place");
        expect_case(c, inspect_in_place(c.body, ','), "in-place-comma");
        expect_case(c, inspect_short_buffer(c.body), "short-buffer");
    }
}

TEST(InspectJson, EveryProperPrefixIsInvalid) {
    for (std::size_t n = 0; n < chat_body.size(); ++n) {
        const std::string_view prefix(chat_body.data(), n);
        SCOPED_TRACE("prefix length " + std::to_string(n));
        EXPECT_FALSE(inspect_json(prefix).valid);
        // The bytes after the prefix are the rest of the real body: the worst padding there is.
        std::string buffer = chat_body + std::string(padding, '}');
        EXPECT_FALSE(inspect_json(buffer.data(), n, buffer.size()).valid);
        EXPECT_FALSE(inspect_in_place(prefix, ',').valid);
        EXPECT_FALSE(inspect_in_place(prefix, ' ').valid);
    }
    EXPECT_TRUE(inspect_json(chat_body).valid);
    EXPECT_TRUE(inspect_in_place(chat_body).valid);
}

TEST(InspectJson, ErrorMessages) {
    EXPECT_EQ(inspect_json("").error, "request body is empty");
    EXPECT_EQ(inspect_json(" \n").error, "request body is empty");
    EXPECT_EQ(inspect_json("[1]").error, "request body must be a JSON object");
    EXPECT_EQ(inspect_json(R"({"model":1})").error, "'model' must be a string");
    EXPECT_EQ(inspect_json(R"({"stream":"yes"})").error, "'stream' must be a boolean");

    const auto truncated = inspect_json(R"({"model":"m",)");
    EXPECT_EQ(truncated.error.rfind("request body is not valid JSON: ", 0), 0u) << truncated.error;

    const auto trailing = inspect_json(R"({"model":"m"} {})");
    EXPECT_EQ(trailing.error,
              "request body is not valid JSON: unexpected content after the object at byte 14");

    const auto broken = inspect_json(R"({"model":"m" "x":1})");
    EXPECT_NE(broken.error.find(" at byte "), std::string::npos) << broken.error;
}

TEST(InspectJson, NullPointerWithZeroSize) {
    EXPECT_FALSE(inspect_json(nullptr, 0, 0).valid);
}

TEST(InspectJson, HugePromptParsed) {
    std::string body = R"({"model":"big","stream":true,"prompt":")";
    body.append(std::size_t{20} << 20, 'a');
    body += R"(","user":"bob"})";
    for (const auto& info : {inspect_json(body), inspect_in_place(body)}) {
        EXPECT_TRUE(info.valid) << info.error;
        EXPECT_EQ(info.model, "big");
        EXPECT_TRUE(info.stream);
        EXPECT_EQ(info.user, "bob");
    }
    // The thread's parser was released after the big body; a small one still works.
    EXPECT_EQ(inspect_json(R"({"model":"small"})").model, "small");
}

// ---- multipart ----

TEST(MultipartBoundary, Table) {
    struct Case {
        std::string content_type;
        std::optional<std::string> boundary;
    };
    const std::vector<Case> cases = {
        {"multipart/form-data; boundary=abc123", "abc123"},
        {"multipart/form-data; boundary=\"a b:c\"", "a b:c"},
        {"Multipart/Form-Data;BOUNDARY=xyz", "xyz"},
        {"multipart/form-data; charset=utf-8; boundary=----WebKitFormBoundary7MA4YWxk",
         "----WebKitFormBoundary7MA4YWxk"},
        {"multipart/form-data; boundary=abc ; charset=utf-8", "abc"},
        {"multipart/form-data; boundary=\"q\\\"x\"", "q\"x"},
        {"multipart/form-data", std::nullopt},
        {"multipart/form-data; charset=utf-8", std::nullopt},
        {"multipart/form-data; boundary=", std::nullopt},
        {"multipart/form-data; boundary=\"\"", std::nullopt},
        {"multipart/form-data; boundary=\"unclosed", std::nullopt},
        {"multipart/mixed; boundary=abc", std::nullopt},
        {"application/json", std::nullopt},
        {"", std::nullopt},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(multipart_boundary(c.content_type), c.boundary) << c.content_type;
    }
}

std::string part(std::string_view boundary, std::string_view headers, std::string_view content,
                 std::string_view eol = "\r\n") {
    std::string out = "--";
    out += boundary;
    out += eol;
    out += headers;
    out += eol;
    out += eol;
    out += content;
    out += eol;
    return out;
}

std::string closing(std::string_view boundary, std::string_view eol = "\r\n") {
    return "--" + std::string(boundary) + "--" + std::string(eol);
}

TEST(MultipartField, Table) {
    const std::string b = "------------------------d74496d66958873e";
    const std::string audio("RIFF\0\0\0\0WAVEfmt \r\n--not-the-boundary\r\n\xFF\xFE", 40);
    const std::string file_part =
        part(b, "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                "Content-Type: audio/wav",
             audio);

    struct Case {
        std::string name;
        std::string body;
        std::string field;
        std::optional<std::string> value;
    };
    const std::vector<Case> cases = {
        {"file_then_model",
         file_part + part(b, "Content-Disposition: form-data; name=\"model\"", "whisper-1") +
             part(b, "Content-Disposition: form-data; name=\"language\"", "en") + closing(b),
         "model", "whisper-1"},
        {"model_first",
         part(b, "Content-Disposition: form-data; name=\"model\"", "whisper-large-v3") +
             file_part + closing(b),
         "model", "whisper-large-v3"},
        {"other_field", file_part + part(b, "content-disposition: form-data; name=\"language\"",
                                         "en") + closing(b),
         "language", "en"},
        {"missing_field", file_part + closing(b), "model", std::nullopt},
        {"name_prefix_trap",
         part(b, "Content-Disposition: form-data; name=\"model_x\"", "no") +
             part(b, "Content-Disposition: form-data; name=\"xmodel\"", "no") + closing(b),
         "model", std::nullopt},
        {"filename_not_a_field",
         part(b, "Content-Disposition: form-data; name=\"file\"; filename=\"model\"", "x") +
             closing(b),
         "model", std::nullopt},
        {"file_named_model_not_a_field",
         part(b, "Content-Disposition: form-data; name=\"model\"; filename=\"m.bin\"", "x") +
             closing(b),
         "model", std::nullopt},
        {"case_insensitive_header",
         part(b, "CONTENT-DISPOSITION: Form-Data; NAME=\"model\"", "m") + closing(b), "model",
         "m"},
        {"field_name_case_sensitive",
         part(b, "Content-Disposition: form-data; name=\"Model\"", "m") + closing(b), "model",
         std::nullopt},
        {"unquoted_name", part(b, "Content-Disposition: form-data; name=model", "m") + closing(b),
         "model", "m"},
        {"extra_headers_and_preamble",
         "preamble text\r\n" +
             part(b, "Content-Type: text/plain\r\nContent-Disposition: form-data; name=\"model\"",
                  "m") +
             closing(b) + "epilogue",
         "model", "m"},
        {"value_with_line_breaks",
         part(b, "Content-Disposition: form-data; name=\"prompt\"", "line1\r\nline2\r\n") +
             closing(b),
         "prompt", "line1\r\nline2\r\n"},
        {"empty_value", part(b, "Content-Disposition: form-data; name=\"model\"", "") + closing(b),
         "model", ""},
        {"duplicate_last_wins",
         part(b, "Content-Disposition: form-data; name=\"model\"", "a") +
             part(b, "Content-Disposition: form-data; name=\"model\"", "b") + closing(b),
         "model", "b"},
        {"lf_only",
         part(b, "Content-Disposition: form-data; name=\"model\"", "m", "\n") +
             closing(b, "\n"),
         "model", "m"},
        {"transport_padding", "--" + b + "  \r\nContent-Disposition: form-data; name=\"model\"" +
                                  "\r\n\r\nm\r\n" + closing(b),
         "model", "m"},
        {"boundary_inside_content_is_content",
         part(b, "Content-Disposition: form-data; name=\"model\"", "x--" + b + "y") + closing(b),
         "model", "x--" + b + "y"},
        {"unterminated_part",
         "--" + b + "\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm", "model",
         std::nullopt},
        {"headers_never_end", "--" + b + "\r\nContent-Disposition: form-data; name=\"model\"",
         "model", std::nullopt},
        {"no_delimiter", "Content-Disposition: form-data; name=\"model\"\r\n\r\nm", "model",
         std::nullopt},
        {"empty_body", "", "model", std::nullopt},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(multipart_field(c.body, b, c.field), c.value) << c.name;
    }
    EXPECT_EQ(multipart_field(cases[0].body, "", "model"), std::nullopt);
}

TEST(MultipartField, BoundaryFromContentType) {
    const auto boundary = multipart_boundary("multipart/form-data; boundary=\"xyz\"");
    ASSERT_TRUE(boundary);
    const std::string body =
        part(*boundary, "Content-Disposition: form-data; name=\"model\"", "m") + closing(*boundary);
    EXPECT_EQ(multipart_field(body, *boundary, "model"), "m");
}

}  // namespace
}  // namespace vllm_router
