#include "core/json_scan.hpp"

#include <cstring>

namespace vllm_router {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

}  // namespace

void JsonScanner::fail(std::string why) {
    if (at_ == At::failed) return;
    at_ = At::failed;
    error_ = std::move(why);
}

// One byte of a string (key or kept value) after its opening quote; `closed` on the closing one.
// `keep` null: the string is a skipped value's, only its end matters.
bool JsonScanner::string_byte(char c, std::string* keep, bool& closed) {
    closed = false;
    if (unicode_left_ > 0) {
        const int v = hex_value(c);
        if (v < 0 && !keep) {
            unicode_left_ = 0;
            return string_byte(c, keep, closed);
        }
        if (v < 0) {
            fail("the body is not valid JSON: bad \\u escape in a string");
            return false;
        }
        unicode_ = unicode_ * 16 + static_cast<unsigned>(v);
        if (--unicode_left_ == 0 && keep) append_utf8(*keep, unicode_);
        return true;
    }
    if (escape_) {
        escape_ = false;
        char out = 0;
        switch (c) {
            case '"': out = '"'; break;
            case '\\': out = '\\'; break;
            case '/': out = '/'; break;
            case 'b': out = '\b'; break;
            case 'f': out = '\f'; break;
            case 'n': out = '\n'; break;
            case 'r': out = '\r'; break;
            case 't': out = '\t'; break;
            case 'u':
                unicode_left_ = 4;
                unicode_ = 0;
                return true;
            default:
                if (!keep) return true;  // inside a skipped value: the engine's to judge
                fail("the body is not valid JSON: bad escape in a string");
                return false;
        }
        if (keep) *keep += out;
        return true;
    }
    if (c == '\\') {
        escape_ = true;
    } else if (c == '"') {
        closed = true;
    } else if (static_cast<unsigned char>(c) < 0x20) {  // simdjson refuses these anywhere
        fail("the body is not valid JSON: control character in a string");
        return false;
    } else if (keep) {
        *keep += c;
    }
    return true;
}

void JsonScanner::end_key() {
    if (key_too_long_) field_ = Field::other;
    else if (key_ == "model") field_ = Field::model;
    else if (key_ == "stream") field_ = Field::stream;
    else if (key_ == "user") field_ = Field::user;
    else field_ = Field::other;
    key_too_long_ = false;
}

void JsonScanner::end_literal() {
    const bool null = literal_ == "null";
    switch (field_) {
        case Field::model:
            if (!null) return fail("\"model\" must be a string");
            info_.model.clear();
            info_.has_model = false;
            break;
        case Field::stream:
            if (literal_ == "true") info_.stream = true;
            else if (literal_ == "false" || null) info_.stream = false;
            else return fail("\"stream\" must be a boolean");
            break;
        case Field::user:
            info_.user.clear();  // the last "user" wins, and only a string is kept
            break;
        default:
            break;  // numbers and literals elsewhere are the engine's to check
    }
    literal_.clear();
}

void JsonScanner::feed(std::string_view piece) {
    for (std::size_t i = 0; i < piece.size(); ++i) {
        const char c = piece[i];
        bool closed = false;
        switch (at_) {
            case At::failed:
                return;
            case At::start:
                if (is_space(c)) break;
                if (c != '{') return fail("the body must be a JSON object");
                at_ = At::key_or_end;
                need_key_ = false;
                break;
            case At::key_or_end:
                if (is_space(c)) break;
                if (c == '}' && !need_key_) {
                    at_ = At::done;
                    break;
                }
                if (c != '"') return fail("the body is not valid JSON: a key was expected");
                key_.clear();
                at_ = At::key;
                break;
            case At::key:
                if (key_.size() >= 64) key_too_long_ = true;
                if (!string_byte(c, key_too_long_ ? nullptr : &key_, closed)) return;
                if (closed) {
                    end_key();
                    at_ = At::colon;
                }
                break;
            case At::colon:
                if (is_space(c)) break;
                if (c != ':') return fail("the body is not valid JSON: ':' was expected");
                at_ = At::value;
                break;
            case At::value:
                if (is_space(c)) break;
                if (c == '"') {
                    if (field_ == Field::stream) return fail("\"stream\" must be a boolean");
                    if (field_ == Field::model || field_ == Field::user) {
                        value_.clear();
                        at_ = At::kept_string;
                    } else {
                        at_ = At::skipped;
                        in_string_ = true;
                        depth_ = 0;
                    }
                } else if (c == '{' || c == '[') {
                    if (field_ == Field::model) return fail("\"model\" must be a string");
                    if (field_ == Field::stream) return fail("\"stream\" must be a boolean");
                    if (field_ == Field::user) info_.user.clear();
                    at_ = At::skipped;
                    in_string_ = false;
                    depth_ = 1;
                } else if (c == ',' || c == '}' || c == ']' || c == ':') {
                    return fail("the body is not valid JSON: a value was expected");
                } else {
                    literal_.assign(1, c);
                    at_ = At::literal;
                }
                break;
            case At::kept_string:
                if (!string_byte(c, &value_, closed)) return;
                if (value_.size() > kMaxValue) {
                    if (field_ == Field::model) return fail("\"model\" is too long to name a model");
                    value_.resize(kMaxValue);
                }
                if (closed) {
                    if (field_ == Field::model) {
                        info_.model = value_;
                        info_.has_model = true;
                    } else {
                        info_.user = value_;
                    }
                    at_ = At::comma_or_end;
                }
                break;
            case At::skipped:
                if (in_string_) {
                    if (!escape_ && unicode_left_ == 0) {
                        // Fast over the body of a long string (a prompt of megabytes): only a
                        // quote or a backslash needs the slow path (memchr is vectorised).
                        const char* from = piece.data() + i;
                        const std::size_t left = piece.size() - i;
                        const void* quote = std::memchr(from, '"', left);
                        const std::size_t until = quote ? static_cast<std::size_t>(static_cast<const char*>(quote) - from) : left;
                        const void* slash = std::memchr(from, '\\', until);
                        const std::size_t stop = slash ? static_cast<std::size_t>(static_cast<const char*>(slash) - from) : until;
                        if (stop == left) return;
                        i += stop;
                    }
                    if (!string_byte(piece[i], nullptr, closed)) return;
                    if (closed) {
                        in_string_ = false;
                        if (depth_ == 0) at_ = At::comma_or_end;
                    }
                    break;
                }
                if (c == '"') {
                    in_string_ = true;
                } else if (c == '{' || c == '[') {
                    ++depth_;
                } else if (c == '}' || c == ']') {
                    if (--depth_ == 0) at_ = At::comma_or_end;
                }
                break;
            case At::literal:
                if (is_space(c) || c == ',' || c == '}') {
                    end_literal();
                    if (at_ == At::failed) return;
                    at_ = At::comma_or_end;
                    --i;  // the same byte again, as a separator
                    break;
                }
                if (literal_.size() < 64) literal_ += c;
                break;
            case At::comma_or_end:
                if (is_space(c)) break;
                if (c == '}') {
                    at_ = At::done;
                } else if (c == ',') {
                    at_ = At::key_or_end;
                    need_key_ = true;  // no '}' right after a comma
                } else {
                    return fail("the body is not valid JSON: ',' or '}' was expected");
                }
                break;
            case At::done:
                if (!is_space(c)) return fail("the body is not valid JSON: data after the top-level object");
                break;
        }
    }
}

RequestInfo JsonScanner::finish() {
    if (at_ == At::failed) {
        RequestInfo bad;
        bad.error = error_;
        return bad;
    }
    if (at_ != At::done) {
        RequestInfo bad;
        bad.error = at_ == At::start ? "the body must be a JSON object" : "the body ends before its JSON object does";
        return bad;
    }
    info_.valid = true;
    return info_;
}

}  // namespace vllm_router
