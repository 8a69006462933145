#include "core/counter_window.hpp"

#include <algorithm>
#include <cmath>

namespace vllm_router {

void CounterWindow::add(double now, double queries, double hits) {
    if (!std::isfinite(queries) || !std::isfinite(hits)) return;
    if (!samples_.empty()) {
        const Sample& last = samples_.back();
        if (queries < last.queries || hits < last.hits) samples_.clear();  // the engine restarted
    }
    samples_.push_back({now, queries, hits});
    // Keep exactly one sample at or before the window start: it is the base of the rate.
    while (samples_.size() > 1 && samples_[1].time <= now - window_) samples_.pop_front();
    while (samples_.size() > kMaxSamples) samples_.pop_front();
}

const CounterWindow::Sample* CounterWindow::base(double now) const {
    if (samples_.empty()) return nullptr;
    const Sample* found = &samples_.front();
    for (const Sample& s : samples_) {
        if (s.time > now - window_) break;
        found = &s;
    }
    return found;
}

double CounterWindow::rate(double now) const {
    const Sample* from = base(now);
    if (!from) return 0.0;
    const Sample& to = samples_.back();
    const double dq = to.queries - from->queries;
    const double dh = to.hits - from->hits;
    if (!(dq > 0) || !(dh >= 0)) return 0.0;
    return std::clamp(dh / dq, 0.0, 1.0);
}

}  // namespace vllm_router
