#include "core/health.hpp"

#include <algorithm>
#include <limits>
#include <string>

#include "core/json_util.hpp"

namespace vllm_router {

const char* to_string(HealthState state) {
    switch (state) {
        case HealthState::healthy: return "healthy";
        case HealthState::unhealthy: return "unhealthy";
        case HealthState::checking: return "checking";
        case HealthState::draining: return "draining";
    }
    return "unknown";
}

HealthTracker::HealthTracker(const Settings& settings)
    : last_check_time_(std::numeric_limits<double>::quiet_NaN()) {
    configure(settings);
}

void HealthTracker::configure(const Settings& settings) {
    min_success_rate_ = settings.health_check_min_success_rate;
    max_response_time_ = settings.health_check_max_response_time;
    consecutive_limit_ = static_cast<int>(std::max<std::int64_t>(1, settings.health_check_consecutive_failures));
    failure_threshold_ = static_cast<int>(std::max<std::int64_t>(1, settings.failure_threshold));
    recovery_after_ = settings.auto_recovery_threshold;
    probe_lease_ = settings.request_timeout;
    active_enabled_ = settings.enable_active_health_check;
    if (!active_enabled_) active_down_ = false;

    const auto size = static_cast<std::size_t>(std::max<std::int64_t>(1, settings.health_check_window_size));
    if (size == ring_.size()) return;
    // Re-lay the newest checks oldest first into a ring of the new size.
    const std::size_t keep = std::min(count_, size);
    std::vector<Check> ring(size);
    for (std::size_t i = 0; i < keep; ++i) ring[keep - 1 - i] = newest(i);
    ring_ = std::move(ring);
    count_ = keep;
    next_ = keep % size;
    judged_ = std::min(judged_, keep);
}

void HealthTracker::push(Check check) {
    ring_[next_] = check;
    next_ = (next_ + 1) % ring_.size();
    count_ = std::min(count_ + 1, ring_.size());
    judged_ = std::min(judged_ + 1, ring_.size());
}

const HealthTracker::Check& HealthTracker::newest(std::size_t i) const {
    return ring_[(next_ + ring_.size() - 1 - i) % ring_.size()];
}

std::string HealthTracker::window_breach() const {
    const std::size_t n = std::min(judged_, count_);
    if (n < std::min<std::size_t>(ring_.size(), 3)) return {};
    std::size_t successes = 0;
    double response_sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const Check& c = newest(i);
        if (!c.ok) continue;
        ++successes;
        response_sum += c.response_seconds;
    }
    // The success rate only over a full window: on fewer checks one failure weighs too much
    // (1 of a fresh server's first 4 is 75 %, below the default 80 %).
    const double rate = static_cast<double>(successes) / static_cast<double>(n);
    if (n >= ring_.size() && rate < min_success_rate_) {
        return "health checks succeeded " + json_number(rate, 3) + " of the time over the last " + std::to_string(n) +
               " (health_check_min_success_rate " + json_number(min_success_rate_, 3) + ")";
    }
    const double average = successes > 0 ? response_sum / static_cast<double>(successes) : 0;
    if (successes > 0 && average > max_response_time_) {
        return "health checks took " + json_number(average, 3) + " s on average over the last " + std::to_string(n) +
               " (health_check_max_response_time " + json_number(max_response_time_, 3) + " s)";
    }
    return {};
}

void HealthTracker::on_check(double now, bool ok, double response_seconds) {
    ++total_checks_;
    last_check_time_ = now;
    last_response_time_ = response_seconds;
    push({ok, response_seconds});
    consecutive_failures_ = ok ? 0 : consecutive_failures_ + 1;
    // An outage: what came before it says nothing about the server that will come back.
    if (consecutive_failures_ >= consecutive_limit_) judged_ = 0;
    if (!active_enabled_) return;

    const bool was_down = active_down_;
    std::string breach;
    if (consecutive_failures_ >= consecutive_limit_) {
        active_down_ = true;
        down_reason_ = std::to_string(consecutive_failures_) + " health checks failed in a row (health_check_consecutive_failures " +
                       std::to_string(consecutive_limit_) + ")";
    } else if (!(breach = window_breach()).empty()) {
        active_down_ = true;
        down_reason_ = std::move(breach);
    } else if (ok) {
        active_down_ = false;
    }
    if (was_down && !active_down_ && circuit_open_) half_open_at_ = std::min(half_open_at_, now);
}

void HealthTracker::open_circuit(double now) {
    circuit_reason_ = circuit_open_ ? "the probe request failed"
                                    : std::to_string(request_failures_) + " requests failed in a row (failure_threshold " +
                                          std::to_string(failure_threshold_) + ")";
    circuit_open_ = true;
    half_open_at_ = now + recovery_after_;
    probe_out_ = false;
}

void HealthTracker::on_request_result(double now, bool ok) {
    if (circuit_open_) {
        if (!probe_out_) return;  // sent before the circuit opened
        probe_out_ = false;
        if (ok) {
            circuit_open_ = false;
            request_failures_ = 0;
        } else {
            ++request_failures_;
            open_circuit(now);
        }
        return;
    }
    if (ok) {
        request_failures_ = 0;
    } else if (++request_failures_ >= failure_threshold_) {
        open_circuit(now);
    }
}

void HealthTracker::set_draining(bool draining) { draining_ = draining; }

bool HealthTracker::probe_slot_free(double now) const {
    return !probe_out_ || now - probe_at_ >= probe_lease_;
}

bool HealthTracker::try_acquire_probe(double now) {
    if (state(now) != HealthState::checking || !probe_slot_free(now)) return false;
    probe_out_ = true;
    probe_at_ = now;
    return true;
}

HealthState HealthTracker::state(double now) const {
    if (draining_) return HealthState::draining;
    if (active_down_) return HealthState::unhealthy;
    if (circuit_open_) return now >= half_open_at_ ? HealthState::checking : HealthState::unhealthy;
    return HealthState::healthy;
}

std::string HealthTracker::reason(double now) const {
    switch (state(now)) {
        case HealthState::draining: return "removed from the configuration: finishing the requests in flight";
        case HealthState::unhealthy:
            if (active_down_) return down_reason_;
            return "circuit open: " + circuit_reason_ + "; a probe request in " + json_number(half_open_at_ - now, 1) +
                   " s (auto_recovery_threshold)";
        case HealthState::checking: return "circuit half-open after " + circuit_reason_ + ": one probe request decides";
        case HealthState::healthy: break;
    }
    return active_enabled_ ? "health checks pass and the circuit is closed" : "the circuit is closed (active checks off)";
}

bool HealthTracker::routable(double now) const {
    switch (state(now)) {
        case HealthState::healthy: return true;
        case HealthState::checking: return probe_slot_free(now);
        default: return false;
    }
}

double HealthTracker::success_rate() const {
    if (count_ == 0) return 1;
    std::size_t successes = 0;
    for (std::size_t i = 0; i < count_; ++i) successes += newest(i).ok ? 1 : 0;
    return static_cast<double>(successes) / static_cast<double>(count_);
}

double HealthTracker::avg_response_time() const {
    std::size_t successes = 0;
    double sum = 0;
    for (std::size_t i = 0; i < count_; ++i) {
        if (!newest(i).ok) continue;
        ++successes;
        sum += newest(i).response_seconds;
    }
    return successes == 0 ? 0 : sum / static_cast<double>(successes);
}

}  // namespace vllm_router
