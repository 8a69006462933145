// Small pieces of text every unit writes the same way: hex digits, FNV-1a hashes, numbers in the
// Prometheus exposition format, durations from seconds. One place each, so that two writers
// cannot drift apart (a metric printed two ways, a hash that differs between processes).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace vllm_router {

inline constexpr char kHexDigits[] = "0123456789abcdef";

// FNV-1a, 64 bits: the same value in every process and on every machine (session placement
// depends on it).
inline constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
inline std::uint64_t fnv1a(std::string_view bytes, std::uint64_t h = kFnvOffset) {
    for (const char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return h;
}

// `v` as 16 lower-case hex digits.
std::string hex64(std::uint64_t v);

// A number as Prometheus client libraries write it: the shortest text that reads back as the
// same double ("0.025", not "0.025000000000000001"), "NaN", "+Inf", "-Inf"; with
// `integral_dot_zero`, whole numbers get ".0" as Python's prometheus_client writes them.
std::string prom_number(double v, bool integral_dot_zero = false);

// Seconds (from configuration, which counts in seconds) as a steady_clock duration.
inline std::chrono::steady_clock::duration to_duration(double seconds) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

// Seconds on the monotonic clock, and since the Unix epoch.
double monotonic_seconds();
double unix_seconds();

}  // namespace vllm_router
