// Health of one server: the state machine that decides whether the router may send it traffic.
// Two signals feed it: active checks (GET /health every health_check_interval) and the outcome
// of every proxied attempt (a passive circuit breaker). One tracker per server URL, kept for the
// router's life so that state survives reloads; it belongs to the control-plane thread and has
// no locking. Time is passed in as `now` (seconds on any monotonic clock), so tests use a fake
// clock and nothing here reads a clock itself.
//
// States (SPEC names, shown by /health):
//   healthy    gets traffic.
//   unhealthy  gets none: active checks marked it down, or its circuit is open.
//   checking   circuit half-open: exactly one request (the probe) may go through.
//   draining   removed from the configuration, finishing in-flight requests; gets none.
// Precedence: draining, then active down (unhealthy), then the circuit, else healthy.
//
// Active checks (only when enable_active_health_check):
//   - A check fails when /health does not answer 200 within health_check_timeout.
//   - Down after health_check_consecutive_failures failed checks in a row, or when the judged
//     window breaks a limit: success rate < health_check_min_success_rate, judged only on a
//     full window (health_check_window_size checks), so that one early failure does not mark a
//     fresh server down; or the average response time of its successful checks >
//     health_check_max_response_time, judged once the window holds min(window size, 3) checks.
//   - The judged window forgets everything before an outage: every failed check that extends a
//     run of consecutive failures to the limit or beyond clears it. A server that was dead comes
//     back on its first good check (one interval), not after a whole window of successes, while a
//     flapping or slow server (never that many failures in a row) stays down until its window
//     meets the limits again.
//   - Recovery happens only on a successful check, after which no trigger holds.
//   - The reported statistics (success_rate, avg_response_time) cover the whole ring of the last
//     window_size checks, outage included: they say what happened, the state says what to do.
//   - When active checks are disabled, on_check only records statistics; the breaker alone
//     decides.
//
// Passive circuit breaker (always on):
//   - closed: failure_threshold failed attempts in a row (connect error, reset, timeout before the
//     first byte, 502/503/504) open it; a success resets the count.
//   - open: no traffic for auto_recovery_threshold seconds, then half-open (`checking`).
//   - half-open: try_acquire_probe() hands out one probe; its outcome closes the circuit
//     (success) or opens it again with the timer restarted (failure).
//   - Results that arrive while the circuit is open and no probe is out come from requests sent
//     before it opened: they are ignored. While a probe is out, the next result is taken as the
//     probe's.
//   - A probe whose result has not come back within request_timeout is taken as lost (the client
//     went away, say): the slot frees up for another probe. The data plane should report an
//     attempt's outcome when the response header arrives, as it does for retries.
//   - A good active check does not close the circuit by itself: vLLM's /health can answer 200
//     while requests fail, and closing on every check would make auto_recovery_threshold
//     meaningless. But when active checks bring back a server they had marked down (a real
//     outage, now over), an open circuit goes half-open at once instead of waiting out its
//     timer: one probe, and traffic resumes on its success.
//
// How the data plane uses it: the control plane publishes `routable(now)` into the fleet snapshot
// (FleetMember::healthy). For a member in `checking`, the request that picks it must hold the
// probe before sending: the control plane grants it with try_acquire_probe(), and the attempt's
// outcome returns through on_request_result(). Other requests skip a checking member whose probe
// is out (routable() is false then).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace vllm_router {

enum class HealthState { healthy, unhealthy, checking, draining };

const char* to_string(HealthState state);

class HealthTracker {
public:
    explicit HealthTracker(const Settings& settings);

    // Takes new health settings (reload). History is kept; a new window size keeps the newest
    // checks that fit.
    void configure(const Settings& settings);

    // The result of one active check: ok = HTTP 200 within health_check_timeout.
    void on_check(double now, bool ok, double response_seconds);
    // The outcome of one proxied attempt, reported by the data plane.
    void on_request_result(double now, bool ok);
    void set_draining(bool draining);

    // In `checking` with the probe slot free: takes the slot and returns true. Otherwise false
    // (including when no probe is needed because the circuit is closed).
    bool try_acquire_probe(double now);

    HealthState state(double now) const;
    // Why it is in state(now), in a sentence for the log: the limit that was broken, or that
    // everything passes.
    std::string reason(double now) const;
    // May a new request be sent here? healthy, or checking with the probe slot free.
    bool routable(double now) const;

    bool draining() const { return draining_; }
    bool active_down() const { return active_down_; }
    // Open or half-open.
    bool circuit_open() const { return circuit_open_; }

    // Active checks failed in a row.
    int consecutive_failures() const { return consecutive_failures_; }
    // Proxied attempts failed in a row.
    int consecutive_request_failures() const { return request_failures_; }
    // Over the last window_size checks; 1 when there has been none.
    double success_rate() const;
    // Average over the successful checks of the last window_size; 0 when there is none.
    double avg_response_time() const;
    double last_response_time() const { return last_response_time_; }
    std::uint64_t total_checks() const { return total_checks_; }
    // `now` of the last check; NaN before the first.
    double last_check_time() const { return last_check_time_; }

    // Checks held (<= window_capacity()) and the ring's fixed size.
    std::size_t window_count() const { return count_; }
    std::size_t window_capacity() const { return ring_.size(); }

private:
    struct Check {
        bool ok = false;
        double response_seconds = 0;
    };

    void push(Check check);
    // The i-th newest check (0: the last one); i < count_.
    const Check& newest(std::size_t i) const;
    // The window limit the judged checks break, as a sentence; "" when none.
    std::string window_breach() const;
    bool probe_slot_free(double now) const;
    void open_circuit(double now);

    // Settings.
    double min_success_rate_ = 0.8;
    double max_response_time_ = 3;
    int consecutive_limit_ = 3;
    int failure_threshold_ = 2;
    double recovery_after_ = 60;
    double probe_lease_ = 120;
    bool active_enabled_ = true;

    // Active checks: a ring of the last window_size checks. judged_ counts the newest entries
    // that the triggers look at (reset by an outage).
    std::vector<Check> ring_;
    std::size_t next_ = 0;
    std::size_t count_ = 0;
    std::size_t judged_ = 0;
    int consecutive_failures_ = 0;
    std::uint64_t total_checks_ = 0;
    double last_check_time_;
    double last_response_time_ = 0;
    bool active_down_ = false;

    bool draining_ = false;

    // Passive breaker.
    int request_failures_ = 0;
    bool circuit_open_ = false;
    std::string down_reason_;     // why active checks marked it down (the last time they did)
    std::string circuit_reason_;  // why the circuit opened (the last time it did)
    double half_open_at_ = 0;
    bool probe_out_ = false;
    double probe_at_ = 0;
};

}  // namespace vllm_router
