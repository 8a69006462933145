// The health state machine driven by a fake clock: every transition as a scripted scenario
// (event, time, expected state and routability after it), plus the window's bounds and stats.
#include "core/health.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

namespace vllm_router {
namespace {

enum class Ev {
    ok,          // a good active check (0.1 s)
    slow,        // a successful check taking `arg` seconds
    fail,        // a failed active check
    req_ok,      // a proxied attempt succeeded
    req_fail,    // a proxied attempt failed
    probe,       // try_acquire_probe; `arg` 1 = expect granted, 0 = expect refused
    drain,       // set_draining(arg != 0)
    look,        // nothing happens: only look at time t
};

struct Step {
    Ev ev;
    double t;
    HealthState want;
    bool routable;
    double arg = 0;
};

constexpr auto H = HealthState::healthy;
constexpr auto U = HealthState::unhealthy;
constexpr auto C = HealthState::checking;
constexpr auto D = HealthState::draining;

struct Scenario {
    std::string name;
    bool active_checks;
    std::vector<Step> steps;
    double min_success_rate = 0.8;
};

void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

// Defaults of SPEC §2: window 10, min success rate 0.8, max response time 3 s, 3 consecutive
// failed checks, circuit after 2 failed requests, probe after 60 s; request_timeout 120 s.
Settings settings_for(const Scenario& s) {
    Settings settings;
    settings.enable_active_health_check = s.active_checks;
    settings.health_check_min_success_rate = s.min_success_rate;
    return settings;
}

// `n` good checks every 10 s from `t0`, each expected to leave the given state.
std::vector<Step> oks(int n, double t0, HealthState want = H, bool routable = true) {
    std::vector<Step> out;
    for (int i = 0; i < n; ++i) out.push_back({Ev::ok, t0 + 10 * i, want, routable});
    return out;
}

std::vector<Step> concat(std::initializer_list<std::vector<Step>> parts) {
    std::vector<Step> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

std::vector<Scenario> scenarios() {
    return {
        {"consecutive_failed_checks_mark_down_and_one_good_check_recovers", true,
         concat({oks(10, 0),
                 {{Ev::fail, 100, H, true},
                  {Ev::fail, 110, H, true},
                  {Ev::fail, 120, U, false},
                  {Ev::ok, 130, H, true}}})},
        {"a_long_outage_does_not_hold_back_recovery", true,
         concat({oks(10, 0),
                 {{Ev::fail, 100, H, true}, {Ev::fail, 110, H, true}, {Ev::fail, 120, U, false}},
                 [] {
                     std::vector<Step> v;
                     for (int i = 0; i < 30; ++i) v.push_back({Ev::fail, 130.0 + 10 * i, U, false});
                     return v;
                 }(),
                 {{Ev::ok, 430, H, true}, {Ev::ok, 440, H, true}, {Ev::ok, 450, H, true}}})},
        // The rate limit is off here so that only the run of failures counts.
        {"a_good_check_resets_the_consecutive_failures", true,
         concat({oks(3, 0),
                 {{Ev::fail, 30, H, true},
                  {Ev::fail, 40, H, true},
                  {Ev::ok, 50, H, true},
                  {Ev::fail, 60, H, true},
                  {Ev::fail, 70, H, true},
                  {Ev::ok, 80, H, true},
                  {Ev::fail, 90, H, true},
                  {Ev::fail, 100, H, true},
                  {Ev::fail, 110, U, false}}}),
         0.0},
        // Window of 10; never three failures in a row, so only the success rate can say no.
        {"low_success_rate_marks_down_and_a_flapping_server_stays_down", true,
         concat({oks(8, 0),
                 {{Ev::fail, 80, H, true},    // S8 F: 8/9
                  {Ev::ok, 90, H, true},      // S8 F S: 9/10
                  {Ev::fail, 100, H, true},   // S7 F S F: 8/10 is not below 0.8
                  {Ev::ok, 110, H, true},     // S6 F S F S: 8/10
                  {Ev::fail, 120, U, false},  // S5 F S F S F: 7/10
                  {Ev::ok, 130, U, false},    // a good check alone is not enough: 7/10
                  {Ev::fail, 140, U, false},  // 6/10
                  {Ev::ok, 150, U, false},    // 6/10
                  {Ev::ok, 160, U, false},    // S F S F S F S F S S: 6/10
                  {Ev::ok, 170, U, false},    // F S F S F S F S S S: 6/10
                  {Ev::ok, 180, U, false},    // S F S F S F S S S S: 7/10
                  {Ev::ok, 190, U, false},    // F S F S F S S S S S: 7/10
                  {Ev::ok, 200, H, true}}})}, // S F S F S S S S S S: 8/10
        // One failure among a fresh server's first four checks (75 %) marked it down.
        {"the_success_rate_is_judged_only_on_a_full_window", true,
         concat({{{Ev::ok, 0, H, true}, {Ev::ok, 10, H, true}, {Ev::ok, 20, H, true}, {Ev::fail, 30, H, true},
                  {Ev::fail, 40, H, true}, {Ev::ok, 50, H, true}},
                 oks(3, 60),
                 {{Ev::fail, 90, U, false}}})},  // S S S F F S S S S F: 7/10
        {"slow_responses_mark_down_until_the_average_recovers", true,
         {{Ev::slow, 0, H, true, 4.0},
          {Ev::slow, 10, H, true, 4.0},
          {Ev::slow, 20, U, false, 4.0},  // average 4 s > 3 s once 3 checks are in
          {Ev::ok, 30, U, false},         // (12 + 0.1) / 4 = 3.025 s
          {Ev::ok, 40, H, true},          // (12 + 0.2) / 5 = 2.44 s
          {Ev::slow, 50, H, true, 3.0}}},
        {"failed_requests_open_the_circuit_and_a_good_probe_closes_it", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 1, U, false},    // failure_threshold = 2: open
          {Ev::probe, 2, U, false, 0},
          {Ev::look, 60.9, U, false},
          {Ev::look, 61, C, true},        // auto_recovery_threshold later: half-open
          {Ev::probe, 61, C, false, 1},   // exactly one probe...
          {Ev::probe, 62, C, false, 0},   // ...and no second one while it is out
          {Ev::req_ok, 63, H, true},      // the probe succeeded: closed
          {Ev::probe, 64, H, true, 0},    // no probe needed when closed
          {Ev::req_fail, 65, H, true}}},  // the count starts again from zero
        {"a_failed_probe_reopens_the_circuit_with_the_timer_restarted", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 0, U, false},
          {Ev::probe, 60, C, false, 1},
          {Ev::req_fail, 70, U, false},   // probe failed at 70: open until 130
          {Ev::look, 129, U, false},
          {Ev::probe, 129, U, false, 0},
          {Ev::look, 130, C, true},
          {Ev::probe, 130, C, false, 1},
          {Ev::req_ok, 131, H, true}}},
        {"a_success_resets_the_request_failure_count", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_ok, 1, H, true},
          {Ev::req_fail, 2, H, true},
          {Ev::req_ok, 3, H, true},
          {Ev::req_fail, 4, H, true},
          {Ev::req_fail, 5, U, false}}},
        {"results_of_requests_sent_before_the_circuit_opened_are_ignored", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 0, U, false},
          {Ev::req_ok, 5, U, false},      // a long request that started earlier
          {Ev::req_fail, 30, U, false},   // does not restart the timer
          {Ev::look, 60, C, true}}},
        {"a_lost_probe_frees_its_slot_after_request_timeout", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 0, U, false},
          {Ev::probe, 60, C, false, 1},
          {Ev::look, 179, C, false},
          {Ev::look, 180, C, true},       // request_timeout = 120 s without an answer
          {Ev::probe, 180, C, false, 1},
          {Ev::req_ok, 181, H, true}}},
        {"a_good_check_does_not_close_a_circuit_that_health_checks_never_saw", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 0, U, false},
          {Ev::ok, 10, U, false},         // /health answers while requests fail
          {Ev::ok, 20, U, false},
          {Ev::look, 60, C, true}}},
        {"active_recovery_from_an_outage_half_opens_the_circuit_at_once", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 1, U, false},    // open until 61
          {Ev::fail, 5, U, false},
          {Ev::fail, 15, U, false},
          {Ev::fail, 25, U, false},       // active down as well
          {Ev::ok, 35, C, true},          // back: one probe now, not at 61
          {Ev::probe, 36, C, false, 1},
          {Ev::req_ok, 37, H, true}}},
        {"an_open_circuit_waits_while_active_checks_say_down", true,
         {{Ev::req_fail, 0, H, true},
          {Ev::req_fail, 1, U, false},
          {Ev::fail, 5, U, false},
          {Ev::fail, 15, U, false},
          {Ev::fail, 25, U, false},
          {Ev::look, 61, U, false},       // the circuit timer alone does not bring it back
          {Ev::probe, 61, U, false, 0},
          {Ev::ok, 65, C, true}}},
        {"draining_overrides_every_other_state", true,
         {{Ev::drain, 0, D, false, 1},
          {Ev::ok, 10, D, false},
          {Ev::drain, 11, H, true, 0},
          {Ev::req_fail, 12, H, true},
          {Ev::req_fail, 13, U, false},
          {Ev::drain, 14, D, false, 1},
          {Ev::look, 80, D, false},
          {Ev::probe, 80, D, false, 0},
          {Ev::drain, 81, C, true, 0}}},
        {"without_active_checks_only_the_breaker_decides", false,
         {{Ev::fail, 0, H, true},
          {Ev::fail, 10, H, true},
          {Ev::fail, 20, H, true},
          {Ev::fail, 30, H, true},
          {Ev::slow, 40, H, true, 9.0},
          {Ev::req_fail, 41, H, true},
          {Ev::req_fail, 42, U, false},
          {Ev::ok, 50, U, false},
          {Ev::look, 102, C, true},
          {Ev::probe, 102, C, false, 1},
          {Ev::req_ok, 103, H, true}}},
    };
}

class HealthScenario : public ::testing::TestWithParam<Scenario> {};

TEST_P(HealthScenario, FollowsTheScript) {
    const Scenario& s = GetParam();
    HealthTracker tracker(settings_for(s));
    for (std::size_t i = 0; i < s.steps.size(); ++i) {
        const Step& step = s.steps[i];
        SCOPED_TRACE("step " + std::to_string(i) + " at t=" + std::to_string(step.t));
        switch (step.ev) {
            case Ev::ok: tracker.on_check(step.t, true, 0.1); break;
            case Ev::slow: tracker.on_check(step.t, true, step.arg); break;
            case Ev::fail: tracker.on_check(step.t, false, 5.0); break;
            case Ev::req_ok: tracker.on_request_result(step.t, true); break;
            case Ev::req_fail: tracker.on_request_result(step.t, false); break;
            case Ev::probe: EXPECT_EQ(tracker.try_acquire_probe(step.t), step.arg != 0); break;
            case Ev::drain: tracker.set_draining(step.arg != 0); break;
            case Ev::look: break;
        }
        EXPECT_STREQ(to_string(tracker.state(step.t)), to_string(step.want));
        EXPECT_EQ(tracker.routable(step.t), step.routable);
    }
}

INSTANTIATE_TEST_SUITE_P(Health, HealthScenario, ::testing::ValuesIn(scenarios()),
                         [](const auto& info) { return info.param.name; });

TEST(HealthTracker, WindowMemoryIsBounded) {
    Settings settings;
    HealthTracker tracker(settings);
    for (int i = 0; i < 1000; ++i) tracker.on_check(i, i % 2 == 0, 0.5);
    EXPECT_EQ(tracker.window_capacity(), 10u);
    EXPECT_EQ(tracker.window_count(), 10u);
    EXPECT_EQ(tracker.total_checks(), 1000u);
    EXPECT_DOUBLE_EQ(tracker.success_rate(), 0.5);
}

TEST(HealthTracker, ReportsItsStatistics) {
    Settings settings;
    HealthTracker tracker(settings);
    EXPECT_TRUE(std::isnan(tracker.last_check_time()));
    EXPECT_EQ(tracker.total_checks(), 0u);
    EXPECT_DOUBLE_EQ(tracker.success_rate(), 1.0);
    EXPECT_DOUBLE_EQ(tracker.avg_response_time(), 0.0);
    EXPECT_FALSE(tracker.circuit_open());

    tracker.on_check(10, true, 0.2);
    tracker.on_check(20, true, 0.4);
    tracker.on_check(30, false, 5.0);
    tracker.on_check(40, false, 5.0);
    EXPECT_DOUBLE_EQ(tracker.last_check_time(), 40);
    EXPECT_DOUBLE_EQ(tracker.last_response_time(), 5.0);
    EXPECT_DOUBLE_EQ(tracker.success_rate(), 0.5);
    EXPECT_NEAR(tracker.avg_response_time(), 0.3, 1e-12);  // successful checks only
    EXPECT_EQ(tracker.consecutive_failures(), 2);

    tracker.on_request_result(41, false);
    EXPECT_EQ(tracker.consecutive_request_failures(), 1);
    tracker.on_request_result(42, false);
    EXPECT_TRUE(tracker.circuit_open());
    EXPECT_EQ(tracker.consecutive_request_failures(), 2);
}

TEST(HealthTracker, OutageStatisticsStayVisibleAfterRecovery) {
    Settings settings;
    HealthTracker tracker(settings);
    for (int i = 0; i < 9; ++i) tracker.on_check(i, false, 5.0);
    tracker.on_check(9, true, 0.1);
    EXPECT_EQ(tracker.state(9), HealthState::healthy);
    EXPECT_DOUBLE_EQ(tracker.success_rate(), 0.1);
}

TEST(HealthTracker, ResizingTheWindowKeepsTheNewestChecks) {
    Settings settings;
    settings.health_check_window_size = 4;
    HealthTracker tracker(settings);
    for (int i = 0; i < 6; ++i) tracker.on_check(i, i >= 3, 1.0);  // F F F S S S
    EXPECT_DOUBLE_EQ(tracker.success_rate(), 0.75);
    settings.health_check_window_size = 2;
    tracker.configure(settings);
    EXPECT_EQ(tracker.window_capacity(), 2u);
    EXPECT_DOUBLE_EQ(tracker.success_rate(), 1.0);
    settings.health_check_window_size = 5;
    tracker.configure(settings);
    EXPECT_EQ(tracker.window_count(), 2u);
    tracker.on_check(6, false, 1.0);
    EXPECT_EQ(tracker.window_count(), 3u);
    EXPECT_NEAR(tracker.success_rate(), 2.0 / 3, 1e-12);
}

TEST(HealthTracker, DisablingActiveChecksClearsTheirVerdict) {
    Settings settings;
    HealthTracker tracker(settings);
    for (int i = 0; i < 3; ++i) tracker.on_check(i, false, 5.0);
    EXPECT_EQ(tracker.state(3), HealthState::unhealthy);
    settings.enable_active_health_check = false;
    tracker.configure(settings);
    EXPECT_EQ(tracker.state(3), HealthState::healthy);
}

TEST(HealthTracker, ReasonsNameTheLimitThatWasBroken) {
    Settings settings;  // 3 failures in a row, window 10, success rate 0.8, 3 s, failure_threshold 2
    HealthTracker tracker(settings);
    EXPECT_EQ(tracker.reason(0), "health checks pass and the circuit is closed");
    for (int i = 0; i < 3; ++i) tracker.on_check(i, false, 5.0);
    EXPECT_EQ(tracker.reason(3), "3 health checks failed in a row (health_check_consecutive_failures 3)");

    HealthTracker slow(settings);
    for (int i = 0; i < 3; ++i) slow.on_check(i, true, 4.0);
    EXPECT_EQ(slow.reason(3), "health checks took 4 s on average over the last 3 (health_check_max_response_time 3 s)");

    HealthTracker flaky(settings);
    for (int i = 0; i < 10; ++i) flaky.on_check(i, i % 3 != 0, 0.1);  // 6 of 10 good, never 3 bad in a row
    EXPECT_EQ(flaky.state(10), HealthState::unhealthy);
    EXPECT_EQ(flaky.reason(10),
              "health checks succeeded 0.6 of the time over the last 10 (health_check_min_success_rate 0.8)");

    HealthTracker breaker(settings);
    breaker.on_request_result(100, false);
    breaker.on_request_result(100, false);
    EXPECT_EQ(breaker.reason(110), "circuit open: 2 requests failed in a row (failure_threshold 2); a probe request in 50 s "
                                   "(auto_recovery_threshold)");
    EXPECT_TRUE(breaker.try_acquire_probe(160));
    breaker.on_request_result(160, false);
    EXPECT_EQ(breaker.reason(221), "circuit half-open after the probe request failed: one probe request decides");

    breaker.set_draining(true);
    EXPECT_EQ(breaker.reason(221), "removed from the configuration: finishing the requests in flight");
}

TEST(HealthTracker, StateNames) {
    EXPECT_STREQ(to_string(HealthState::healthy), "healthy");
    EXPECT_STREQ(to_string(HealthState::unhealthy), "unhealthy");
    EXPECT_STREQ(to_string(HealthState::checking), "checking");
    EXPECT_STREQ(to_string(HealthState::draining), "draining");
}

}  // namespace
}  // namespace vllm_router
