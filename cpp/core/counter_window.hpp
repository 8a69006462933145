// The recent rate of two cumulative counters, such as an engine's prefix-cache hits over its
// prefix-cache queries: the ratio of their increases across the last `window` seconds.
//
// vLLM's counters only grow for the life of the engine, so their all-time ratio says little
// about what the cache does now, and the ratio of one scrape's deltas jumps about and holds its
// last value while the engine is idle. Here the ratio is
//     (hits(now) - hits(now - window)) / (queries(now) - queries(now - window)),
// 0 when no query came in the window, so an idle engine shows 0, not a stale figure. The value
// at `now - window` is the newest sample taken at or before that instant (or the oldest sample
// kept, while the history is shorter than the window). A counter that goes down means the
// engine restarted: the history starts again from that sample.
//
// Memory: one sample per scrape over the window, at most kMaxSamples (older ones are thinned
// out by keeping the newest sample before the window start only).
#pragma once

#include <cstddef>
#include <deque>

namespace vllm_router {

class CounterWindow {
public:
    static constexpr std::size_t kMaxSamples = 4096;

    explicit CounterWindow(double window_seconds = 60) : window_(window_seconds) {}

    void set_window(double seconds) { window_ = seconds; }
    // A scrape at monotonic time `now` read these cumulative values.
    void add(double now, double queries, double hits);
    // hits / queries over the window ending at `now`, clamped to 0..1; 0 without queries.
    double rate(double now) const;
    void clear() { samples_.clear(); }
    bool empty() const { return samples_.empty(); }
    std::size_t size() const { return samples_.size(); }

private:
    struct Sample {
        double time, queries, hits;
    };
    const Sample* base(double now) const;

    double window_;
    std::deque<Sample> samples_;
};

}  // namespace vllm_router
