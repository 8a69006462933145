#include "core/stats.hpp"

#include <algorithm>
#include <cmath>

namespace vllm_router {

Histogram::Histogram(std::span<const double> bounds) : bounds_(bounds.first(std::min(bounds.size(), kMaxBounds))) {}

void Histogram::observe(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return;
    const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), seconds);
    ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
    ++count_;
    sum_ += seconds;
}

void Histogram::merge(const Histogram& other) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
}

void WindowTotals::add(const WindowTotals& o) {
    requests += o.requests;
    errors += o.errors;
    latency_sum += o.latency_sum;
    ttft_sum += o.ttft_sum;
    ttft_count += o.ttft_count;
    itl_sum += o.itl_sum;
    itl_count += o.itl_count;
}

void WindowTotals::add(const RequestSample& s) {
    ++requests;
    if (!s.ok) ++errors;
    latency_sum += s.latency;
    if (s.ttft >= 0) {
        ttft_sum += s.ttft;
        ++ttft_count;
    }
    itl_sum += s.itl_sum;
    itl_count += s.itl_count;
}

WindowSummary summarize(const WindowTotals& t, double seconds) {
    WindowSummary s;
    s.requests = t.requests;
    s.qps = seconds > 0 ? static_cast<double>(t.requests) / seconds : 0;
    if (t.requests) {
        s.error_rate = static_cast<double>(t.errors) / static_cast<double>(t.requests);
        s.avg_latency = t.latency_sum / static_cast<double>(t.requests);
    }
    if (t.ttft_count) s.avg_ttft = t.ttft_sum / static_cast<double>(t.ttft_count);
    if (t.itl_count) s.avg_itl = t.itl_sum / static_cast<double>(t.itl_count);
    return s;
}

StatsWindow::StatsWindow(double window_seconds)
    : window_(window_seconds > 0 ? window_seconds : 60),
      width_(std::max(1.0, window_ / static_cast<double>(kMaxBuckets))),
      slots_(static_cast<std::size_t>(std::ceil(window_ / width_)) + 1) {}

void StatsWindow::record(double now, const RequestSample& sample) {
    const auto index = static_cast<std::int64_t>(std::floor(now / width_));
    Slot& slot = slots_[static_cast<std::size_t>(index % static_cast<std::int64_t>(slots_.size()))];
    if (slot.index != index) {
        // The slot last held an interval that has left the window: start it afresh.
        slot.index = index;
        slot.totals = {};
    }
    slot.totals.add(sample);
}

WindowTotals StatsWindow::totals(double now) const {
    const auto newest = static_cast<std::int64_t>(std::floor(now / width_));
    // The window spans the current (partial) slot and the full slots before it.
    const auto oldest = newest - static_cast<std::int64_t>(slots_.size()) + 2;
    WindowTotals out;
    for (const auto& slot : slots_)
        if (slot.index >= oldest && slot.index <= newest) out.add(slot.totals);
    return out;
}

}  // namespace vllm_router
