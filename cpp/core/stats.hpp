// Request statistics in bounded memory. Each I/O thread keeps its own (no atomics, no locks on
// the hot path); readers add the threads' figures together, which is why every figure here is
// a sum or a count and averages are computed only at the end.
//
//   Histogram    cumulative Prometheus-style buckets (request duration, TTFT, inter-token gap)
//   StatsWindow  the last `window` seconds in at most kMaxBuckets slots: QPS, errors, averages
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace vllm_router {

// Upper bounds (seconds, increasing) of the router's histograms, one set per kind. They reach
// far: an LLM request can run for many minutes, and a first token can wait behind a long queue.
namespace buckets {
inline constexpr double request_duration[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
                                              10,    20,   30,    60,   120, 180,  300, 600, 1200};
inline constexpr double time_to_first_token[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                                                 1,     2.5,   5,    7.5,   10,   20,    40,  80,   160, 640};
inline constexpr double inter_token_latency[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                                                 0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1,    2.5};
}  // namespace buckets

class Histogram {
public:
    static constexpr std::size_t kMaxBounds = 24;

    // `bounds`: one of the sets above (or any increasing set of at most kMaxBounds that outlives
    // the histogram). Histograms merged together share their set.
    explicit Histogram(std::span<const double> bounds);

    void observe(double seconds);
    void merge(const Histogram& other);

    std::span<const double> bounds() const { return bounds_; }
    // counts()[i]: observations <= bounds()[i] (not cumulative); counts().back(): above the last.
    std::span<const std::uint64_t> counts() const { return {counts_.data(), bounds_.size() + 1}; }
    std::uint64_t count() const { return count_; }
    double sum() const { return sum_; }

private:
    std::span<const double> bounds_;
    std::array<std::uint64_t, kMaxBounds + 1> counts_{};
    std::uint64_t count_ = 0;
    double sum_ = 0;
};

// One finished request, as the window records it.
struct RequestSample {
    double latency = 0;    // s from request to last byte
    double ttft = -1;      // s to the first streamed event; < 0 when not a stream
    double itl_sum = 0;    // sum of gaps between streamed events
    std::uint64_t itl_count = 0;
    bool ok = true;        // 2xx/3xx/4xx answered by a server; false: router or server failure
};

// Additive totals: what several windows (threads) sum to.
struct WindowTotals {
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;
    double latency_sum = 0;
    double ttft_sum = 0;
    std::uint64_t ttft_count = 0;
    double itl_sum = 0;
    std::uint64_t itl_count = 0;

    void add(const WindowTotals& other);
    void add(const RequestSample& sample);
};

// A finished summary over a window of `seconds`.
struct WindowSummary {
    double qps = 0;
    double error_rate = 0;     // errors / requests
    double avg_latency = 0;    // s
    double avg_ttft = 0;       // s, over streamed requests
    double avg_itl = 0;        // s
    std::uint64_t requests = 0;
};

WindowSummary summarize(const WindowTotals& totals, double seconds);

class StatsWindow {
public:
    static constexpr std::size_t kMaxBuckets = 120;

    // Covers the last `window_seconds` (> 0) in slots of max(1 s, window / kMaxBuckets).
    explicit StatsWindow(double window_seconds = 60);

    // `now`: seconds on a monotonic clock.
    void record(double now, const RequestSample& sample);

    // Sum of the slots that fall within the window ending at `now`.
    WindowTotals totals(double now) const;

    double window_seconds() const { return window_; }
    std::size_t slot_count() const { return slots_.size(); }

private:
    struct Slot {
        std::int64_t index = -1;  // which slot-width interval since the clock's epoch it holds
        WindowTotals totals;
    };
    double window_;
    double width_;
    std::vector<Slot> slots_;
};

}  // namespace vllm_router
