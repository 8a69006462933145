#include "core/trace_context.hpp"

#include <algorithm>
#include <cmath>

namespace vllm_router {
namespace {

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;  // upper case is not allowed either
}

template <std::size_t N>
bool read_hex(std::string_view text, std::array<std::uint8_t, N>& out) {
    if (text.size() != 2 * N) return false;
    for (std::size_t i = 0; i < N; ++i) {
        const int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return true;
}

template <std::size_t N>
bool all_zero(const std::array<std::uint8_t, N>& a) {
    return std::all_of(a.begin(), a.end(), [](std::uint8_t b) { return b == 0; });
}

}  // namespace

std::optional<TraceParent> parse_traceparent(std::string_view v) {
    // Leading and trailing blanks are tolerated (optional whitespace around a field value).
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
    std::array<std::uint8_t, 1> version{}, flags{};
    if (!read_hex(v.substr(0, 2), version) || version[0] == 0xff) return std::nullopt;
    if (version[0] == 0 && v.size() != 55) return std::nullopt;
    if (version[0] != 0 && v.size() > 55 && v[55] != '-') return std::nullopt;
    TraceParent out;
    if (!read_hex(v.substr(3, 32), out.trace_id) || !read_hex(v.substr(36, 16), out.parent_id) ||
        !read_hex(v.substr(53, 2), flags))
        return std::nullopt;
    if (all_zero(out.trace_id) || all_zero(out.parent_id)) return std::nullopt;
    out.flags = flags[0];
    return out;
}

namespace {

char* put_hex(char* out, const std::uint8_t* bytes, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < n; ++i) {
        *out++ = digits[bytes[i] >> 4];
        *out++ = digits[bytes[i] & 0xf];
    }
    return out;
}

}  // namespace

std::string to_hex(const std::uint8_t* bytes, std::size_t n) {
    std::string out(2 * n, '0');
    put_hex(out.data(), bytes, n);
    return out;
}

void write_traceparent(char* out, const TraceId& trace_id, const SpanId& span_id, std::uint8_t flags) {
    *out++ = '0';
    *out++ = '0';
    *out++ = '-';
    out = put_hex(out, trace_id.data(), trace_id.size());
    *out++ = '-';
    out = put_hex(out, span_id.data(), span_id.size());
    *out++ = '-';
    put_hex(out, &flags, 1);
}

std::string format_traceparent(const TraceId& trace_id, const SpanId& span_id, std::uint8_t flags) {
    std::string out(kTraceparentSize, '0');
    write_traceparent(out.data(), trace_id, span_id, flags);
    return out;
}

bool sampled_by_ratio(const TraceId& trace_id, double ratio) {
    if (!(ratio > 0)) return false;
    if (ratio >= 1) return true;
    std::uint64_t low = 0;
    for (std::size_t i = 8; i < 16; ++i) low = low << 8 | trace_id[i];
    // The SDK: bound = round(ratio * 2^64) (Python's round: ties to even, as nearbyint in the
    // default rounding mode), compared as integers.
    const double bound = std::nearbyint(ratio * 18446744073709551616.0);
    if (bound >= 18446744073709551616.0) return true;
    return low < static_cast<std::uint64_t>(bound);
}

}  // namespace vllm_router
