// Request inspection for a body too large to hold in memory (spooled to disk as it arrives):
// the same facts inspect_json reads (model, stream, user), found by scanning the bytes in
// pieces, in one pass, holding only the values it keeps.
//
// It applies inspect_json's contract (inspect.hpp), so that where a body lies never changes
// the answer: the top level must be one object and nothing but whitespace may follow it;
// "model" must be a string or null, "stream" a boolean or null; "user" is kept when it is a
// string; every other value is skipped by structure only (strings, brackets and braces
// balanced; numbers, literals and control characters within them are left to the engine,
// where inspect_json refuses a control character anywhere); keys are compared
// after unescaping and the last occurrence wins. Kept strings are capped at kMaxValue bytes:
// a longer "model" cannot name a served model and is reported as invalid.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/inspect.hpp"

namespace vllm_router {

class JsonScanner {
public:
    static constexpr std::size_t kMaxValue = 4096;

    // The next piece of the body.
    void feed(std::string_view piece);
    // The body ended: the facts, or why it is not valid.
    RequestInfo finish();

private:
    enum class At {
        start,        // before the top-level '{'
        key_or_end,   // after '{': a key or '}'
        key,          // inside a key string
        colon,        // after a key
        value,        // before a value
        kept_string,  // inside a string value that is kept (model, user)
        skipped,      // inside a value that is skipped (depth counts nesting)
        literal,      // inside a bare value at depth 1 (number, true, false, null)
        comma_or_end, // after a value
        done,         // after the top-level '}'
        failed,
    };
    enum class Field { other, model, stream, user };

    void fail(std::string why);
    void end_key();
    void end_literal();
    bool string_byte(char c, std::string* keep, bool& closed);

    At at_ = At::start;
    Field field_ = Field::other;
    std::string key_;
    std::string value_;
    std::string literal_;
    int depth_ = 0;           // nesting inside a skipped value
    bool in_string_ = false;  // inside a string of a skipped value
    bool escape_ = false;
    int unicode_left_ = 0;    // hex digits of a \u escape still to come
    unsigned unicode_ = 0;
    bool key_too_long_ = false;
    bool need_key_ = false;   // after a comma: a key, not '}'
    RequestInfo info_;
    std::string error_;
};

}  // namespace vllm_router
