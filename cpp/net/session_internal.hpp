// What the session's files (session.cpp, session_exchange.cpp, session_relay.cpp, session_trace.cpp) share:
// their limits and the few text helpers they all write messages with. Not for other units.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "core/text.hpp"

namespace vllm_router::session_detail {

using namespace std::string_view_literals;

inline constexpr auto kClientIdleTimeout = std::chrono::seconds(75);   // keep-alive wait for a request
inline constexpr auto kLinger = std::chrono::seconds(2);
inline constexpr double kConnectTimeoutCap = 5.0;                      // s: an unreachable host fails fast
// A stream's events are a few hundred bytes; 4 KiB per relayed answer keeps ten thousand
// streams well inside the memory bar while a large answer still moves in few reads.
inline constexpr std::size_t kRelayBufferSize = 4096;
// Room around the body in the relay buffer for chunk framing: a size line before, CRLF and the
// last chunk after.
inline constexpr std::size_t kRelayPrefix = 24;
inline constexpr std::size_t kRelayAllocation = kRelayPrefix + kRelayBufferSize + 8;
inline constexpr std::size_t kHeaderLimit = 64 * 1024;
// Bytes a client may pipeline while its request is served: beyond them the session stops
// reading (and watching) until their turn, and TCP holds the rest back.
inline constexpr std::size_t kPipelineLimit = 64 * 1024;
// Reads take what the socket has, up to this much at a time.
inline constexpr std::size_t kMinRead = 1024;
inline constexpr std::size_t kMaxRead = 64 * 1024;
// A stream's events are small: 2 KiB reads keep the buffer of each of ten thousand streams small.
inline constexpr std::size_t kUpstreamMinRead = 2048;
inline constexpr std::string_view kCrlf = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";
inline constexpr std::string_view kRequestIdHeader = "X-Request-Id";

inline void append_field(std::string& out, std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": "sv);
    out.append(value);
    out.append(kCrlf);
}

// Writes "<hex size>\r\n" so that it ends at `end`; returns its length.
inline std::size_t put_chunk_size(char* end, std::size_t size) {
    char* p = end;
    *--p = '\n';
    *--p = '\r';
    do {
        *--p = kHexDigits[size & 0xf];
        size >>= 4;
    } while (size > 0);
    return static_cast<std::size_t>(end - p);
}

inline std::string_view path_of(std::string_view target) {
    const auto q = target.find('?');
    return q == std::string_view::npos ? target : target.substr(0, q);
}

}  // namespace vllm_router::session_detail
