// Routing policies over literal fleets: least-load scores, round-robin cycles, random spread,
// and the session policy's consistent hashing (same answer everywhere, minimal movement).
#include "core/policy.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace vllm_router {
namespace {

struct Spec {
    std::string url;
    int capacity = 3;
    double weight = 1;
    int in_flight = 0;
    double running = 0;
    double waiting = 0;
};

Fleet make_fleet(const std::vector<Spec>& specs) {
    Fleet fleet;
    for (const auto& s : specs) {
        FleetMember m;
        m.config.url = s.url;
        m.config.parts = *parse_url(s.url);
        m.config.max_concurrent_requests = s.capacity;
        m.config.weight = s.weight;
        m.state = std::make_shared<BackendState>(s.url);
        m.state->in_flight = s.in_flight;
        m.running = s.running;
        m.waiting = s.waiting;
        m.models = {"m"};
        m.models_known = true;
        fleet.members.push_back(std::move(m));
    }
    return fleet;
}

std::vector<std::size_t> all_of(const Fleet& fleet) { return eligible_members(fleet, "m", {}); }

std::vector<Spec> servers(int n, double weight = 1) {
    std::vector<Spec> out;
    for (int i = 0; i < n; ++i) out.push_back({"http://gpu-" + std::to_string(i) + ":8081", 3, weight});
    return out;
}

// The URL a policy sends `key` to.
std::string session_pick(Policy& policy, const Fleet& fleet, const std::string& key) {
    const auto candidates = all_of(fleet);
    const std::size_t c = policy.pick(fleet, candidates, {"m", key, 0});
    return fleet.members[candidates[c]].config.url;
}

std::string key_of(int i) { return "user-" + std::to_string(i); }

// ---------------------------------------------------------------- names

TEST(PolicyNames, EveryConfiguredNameParsesAndRoundTrips) {
    for (const auto name : routing_logics()) {
        const auto logic = parse_routing_logic(name);
        ASSERT_TRUE(logic.has_value()) << name;
        EXPECT_EQ(to_string(*logic), name);
        EXPECT_NE(make_policy(*logic), nullptr);
    }
    for (const auto bad : {"", "least_load", "LEAST-LOAD", "round-robin", "prefix-aware"})
        EXPECT_FALSE(parse_routing_logic(bad).has_value()) << bad;
}

// ---------------------------------------------------------------- least-load

struct LeastLoadCase {
    std::string name;
    std::vector<Spec> fleet;
    std::size_t want;
};

void PrintTo(const LeastLoadCase& c, std::ostream* os) { *os << c.name; }

std::vector<LeastLoadCase> least_load_cases() {
    return {
        // (1*3)/2 = 1.5 against (1*3)/8 = 0.375
        {"larger_capacity_with_the_same_in_flight", {{"http://a:1", 2, 1, 1}, {"http://b:1", 8, 1, 1}}, 1},
        {"scraped_waiting_counts", {{"http://a:1", 4, 1, 0, 0, 3}, {"http://b:1", 4, 1, 0, 0, 1}}, 1},
        // running weighs three times waiting: 3/4 against 2/4
        {"running_weighs_more_than_waiting", {{"http://a:1", 4, 1, 0, 1, 0}, {"http://b:1", 4, 1, 0, 0, 2}}, 1},
        // the scrape sees other clients' traffic: max(0, 3) against max(1, 0)
        {"scraped_running_beyond_own_in_flight", {{"http://a:1", 3, 1, 0, 3}, {"http://b:1", 3, 1, 1, 0}}, 1},
        // the scrape lags: max(2, 0) against max(1, 1)
        {"own_in_flight_when_the_scrape_lags", {{"http://a:1", 3, 1, 2, 0}, {"http://b:1", 3, 1, 1, 1}}, 1},
        // 9 / (4*2) = 1.125 against 6 / 4 = 1.5
        {"weight_scales_capacity", {{"http://a:1", 4, 2, 3}, {"http://b:1", 4, 1, 2}}, 0},
        {"lowest_of_many",
         {{"http://a:1", 3, 1, 2}, {"http://b:1", 3, 1, 3}, {"http://c:1", 3, 1, 0, 0, 1}, {"http://d:1", 3, 1, 1}},
         2},
    };
}

class PolicyLeastLoad : public ::testing::TestWithParam<LeastLoadCase> {};

TEST_P(PolicyLeastLoad, PicksTheLowestScore) {
    const auto& c = GetParam();
    const Fleet fleet = make_fleet(c.fleet);
    auto policy = make_policy(RoutingLogic::least_load);
    std::mt19937_64 rng(7);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(policy->pick(fleet, all_of(fleet), {"m", "", rng()}), c.want);
}

INSTANTIATE_TEST_SUITE_P(Policy, PolicyLeastLoad, ::testing::ValuesIn(least_load_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(PolicyLeastLoadTies, AreBrokenAtRandom) {
    const Fleet fleet = make_fleet(servers(3));
    auto policy = make_policy(RoutingLogic::least_load);
    std::mt19937_64 rng(1);
    std::vector<int> counts(3);
    for (int i = 0; i < 3000; ++i) ++counts[policy->pick(fleet, all_of(fleet), {"m", "", rng()})];
    for (int n : counts) EXPECT_TRUE(n > 850 && n < 1150) << n;
}

// ---------------------------------------------------------------- roundrobin

TEST(PolicyRoundRobin, CyclesInFleetOrder) {
    const Fleet fleet = make_fleet(servers(3));
    auto policy = make_policy(RoutingLogic::roundrobin);
    for (int i = 0; i < 9; ++i)
        EXPECT_EQ(policy->pick(fleet, all_of(fleet), {"m", "", 0}), static_cast<std::size_t>(i % 3));
}

struct WeightedCase {
    std::string name;
    std::vector<double> weights;
    std::vector<int> per_round;  // picks each server gets in one round
};

void PrintTo(const WeightedCase& c, std::ostream* os) { *os << c.name; }

class PolicyRoundRobinWeighted : public ::testing::TestWithParam<WeightedCase> {};

TEST_P(PolicyRoundRobinWeighted, GivesEachServerItsShareEveryRound) {
    const auto& c = GetParam();
    std::vector<Spec> specs;
    for (std::size_t i = 0; i < c.weights.size(); ++i)
        specs.push_back({"http://gpu-" + std::to_string(i) + ":1", 3, c.weights[i]});
    const Fleet fleet = make_fleet(specs);
    auto policy = make_policy(RoutingLogic::roundrobin);
    int round = 0;
    for (int n : c.per_round) round += n;
    for (int r = 0; r < 5; ++r) {
        std::vector<int> counts(c.weights.size());
        for (int i = 0; i < round; ++i) ++counts[policy->pick(fleet, all_of(fleet), {"m", "", 0})];
        EXPECT_EQ(counts, c.per_round) << "round " << r;
    }
}

INSTANTIATE_TEST_SUITE_P(Policy, PolicyRoundRobinWeighted,
                         ::testing::Values(WeightedCase{"one_to_two", {1, 2}, {1, 2}},
                                           WeightedCase{"two_to_three", {1, 1.5}, {2, 3}},
                                           WeightedCase{"scaled_weights", {0.5, 0.5, 1.5}, {1, 1, 3}},
                                           WeightedCase{"one_heavy", {1, 1, 1, 5}, {1, 1, 1, 5}}),
                         [](const auto& info) { return info.param.name; });

TEST(PolicyRoundRobin, SpreadsAHeavyServersTurnsThroughTheRound) {
    const Fleet fleet = make_fleet({{"http://a:1", 3, 1}, {"http://b:1", 3, 1}, {"http://c:1", 3, 6}});
    auto policy = make_policy(RoutingLogic::roundrobin);
    // A round of 8: the light servers must not both wait behind six heavy turns in a row.
    int longest_run = 0, run = 0;
    for (int i = 0; i < 80; ++i) {
        run = policy->pick(fleet, all_of(fleet), {"m", "", 0}) == 2 ? run + 1 : 0;
        longest_run = std::max(longest_run, run);
    }
    EXPECT_LT(longest_run, 6);
}

TEST(PolicyRoundRobin, IsExactAcrossThreads) {
    const Fleet fleet = make_fleet(servers(3));
    auto policy = make_policy(RoutingLogic::roundrobin);
    const auto candidates = all_of(fleet);
    std::vector<std::vector<int>> counts(4, std::vector<int>(3));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 3000; ++i) ++counts[t][policy->pick(fleet, candidates, {"m", "", 0})];
        });
    for (auto& th : threads) th.join();
    for (int s = 0; s < 3; ++s) EXPECT_EQ(counts[0][s] + counts[1][s] + counts[2][s] + counts[3][s], 4000);
}

// ---------------------------------------------------------------- random

struct RandomCase {
    std::string name;
    std::vector<double> weights;
    bool sequential_random;  // a weak source: 0, 1, 2, ...
};

void PrintTo(const RandomCase& c, std::ostream* os) { *os << c.name; }

class PolicyRandom : public ::testing::TestWithParam<RandomCase> {};

TEST_P(PolicyRandom, SpreadsInProportionToWeight) {
    const auto& c = GetParam();
    std::vector<Spec> specs;
    double total = 0;
    for (std::size_t i = 0; i < c.weights.size(); ++i) {
        specs.push_back({"http://gpu-" + std::to_string(i) + ":1", 3, c.weights[i]});
        total += c.weights[i];
    }
    const Fleet fleet = make_fleet(specs);
    auto policy = make_policy(RoutingLogic::random);
    std::mt19937_64 rng(42);
    constexpr int kPicks = 10000;
    std::vector<int> counts(c.weights.size());
    for (int i = 0; i < kPicks; ++i) {
        const std::uint64_t r = c.sequential_random ? static_cast<std::uint64_t>(i) : rng();
        ++counts[policy->pick(fleet, all_of(fleet), {"m", "", r})];
    }
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double expected = kPicks * c.weights[i] / total;
        // Several standard deviations (at most 50 here) of slack, yet far from any other share.
        EXPECT_NEAR(counts[i], expected, 250) << "server " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(Policy, PolicyRandom,
                         ::testing::Values(RandomCase{"uniform", {1, 1, 1, 1}, false},
                                           RandomCase{"uniform_from_a_counter", {1, 1, 1, 1}, true},
                                           RandomCase{"weighted", {1, 3}, false},
                                           RandomCase{"weighted_from_a_counter", {1, 2, 1}, true}),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------- session

TEST(PolicySession, SameKeySameServerEverywhere) {
    const Fleet fleet = make_fleet(servers(5));
    auto one = make_policy(RoutingLogic::session);
    auto other = make_policy(RoutingLogic::session);  // another router replica
    // The replica lists the same servers in another order.
    std::vector<Spec> reversed = servers(5);
    std::reverse(reversed.begin(), reversed.end());
    const Fleet fleet_reversed = make_fleet(reversed);
    for (int i = 0; i < 1000; ++i) {
        const std::string first = session_pick(*one, fleet, key_of(i));
        EXPECT_EQ(session_pick(*one, fleet, key_of(i)), first);
        EXPECT_EQ(session_pick(*other, fleet, key_of(i)), first);
        EXPECT_EQ(session_pick(*other, fleet_reversed, key_of(i)), first);
    }
}

TEST(PolicySession, SpreadsKeysEvenly) {
    const Fleet fleet = make_fleet(servers(5));
    auto policy = make_policy(RoutingLogic::session);
    std::map<std::string, int> counts;
    for (int i = 0; i < 10000; ++i) ++counts[session_pick(*policy, fleet, key_of(i))];
    ASSERT_EQ(counts.size(), 5u);
    for (const auto& [url, n] : counts) EXPECT_NEAR(n, 2000, 250) << url;
}

TEST(PolicySession, RemovingAServerMovesOnlyItsKeys) {
    const auto five = servers(5);
    auto four = five;
    four.erase(four.begin() + 2);
    const Fleet before = make_fleet(five), after = make_fleet(four);
    auto policy = make_policy(RoutingLogic::session);
    int moved = 0;
    for (int i = 0; i < 10000; ++i) {
        const std::string was = session_pick(*policy, before, key_of(i));
        const std::string now = session_pick(*policy, after, key_of(i));
        if (was == five[2].url) {
            ++moved;
            EXPECT_NE(now, was);
        } else {
            EXPECT_EQ(now, was) << key_of(i);
        }
    }
    EXPECT_NEAR(moved, 2000, 250);
}

TEST(PolicySession, AddingAServerMovesAboutItsShareAndOnlyToIt) {
    const auto five = servers(5);
    const auto six = servers(6);
    const Fleet before = make_fleet(five), after = make_fleet(six);
    auto policy = make_policy(RoutingLogic::session);
    int moved = 0;
    for (int i = 0; i < 10000; ++i) {
        const std::string was = session_pick(*policy, before, key_of(i));
        const std::string now = session_pick(*policy, after, key_of(i));
        if (now == was) continue;
        ++moved;
        EXPECT_EQ(now, six[5].url) << key_of(i);
    }
    EXPECT_NEAR(moved, 10000 / 6, 250);
}

TEST(PolicySession, ChoosesOnlyAmongCandidates) {
    const Fleet fleet = make_fleet(servers(5));
    auto policy = make_policy(RoutingLogic::session);
    const std::vector<std::size_t> candidates = {0, 1, 3, 4};  // 2 is down, or already tried
    int moved = 0;
    for (int i = 0; i < 2000; ++i) {
        const std::size_t c = policy->pick(fleet, candidates, {"m", key_of(i), 0});
        ASSERT_LT(c, candidates.size());
        const std::string now = fleet.members[candidates[c]].config.url;
        const std::string was = session_pick(*policy, fleet, key_of(i));
        if (now != was) ++moved;
        EXPECT_TRUE(now == was || was == fleet.members[2].config.url);
    }
    EXPECT_GT(moved, 0);
}

TEST(PolicySession, WeightsShareKeysAndStillMoveOnlyToANewcomer) {
    const std::vector<Spec> two = {{"http://a:1", 3, 1}, {"http://b:1", 3, 3}};
    auto three = two;
    three.push_back({"http://c:1", 3, 4});
    const Fleet before = make_fleet(two), after = make_fleet(three);
    auto policy = make_policy(RoutingLogic::session);
    int heavy = 0, moved = 0;
    for (int i = 0; i < 10000; ++i) {
        const std::string was = session_pick(*policy, before, key_of(i));
        const std::string now = session_pick(*policy, after, key_of(i));
        if (was == "http://b:1") ++heavy;
        if (now != was) {
            ++moved;
            EXPECT_EQ(now, "http://c:1");
        }
    }
    EXPECT_NEAR(heavy, 7500, 250);
    EXPECT_NEAR(moved, 5000, 250);  // the newcomer's weight is half of the total
}

TEST(PolicySession, SameServerHowEverItsUrlIsWritten) {
    const Fleet one = make_fleet({{"http://GPU-1:8081/"}, {"http://gpu-2:8081"}});
    const Fleet other = make_fleet({{"http://gpu-1:8081"}, {"HTTP://gpu-2:8081//"}});
    auto policy = make_policy(RoutingLogic::session);
    for (int i = 0; i < 200; ++i) {
        EXPECT_EQ(policy->pick(one, all_of(one), {"m", key_of(i), 0}),
                  policy->pick(other, all_of(other), {"m", key_of(i), 0}));
    }
}

TEST(PolicySession, WithoutASessionValueFallsBackToLeastLoad) {
    const Fleet fleet = make_fleet({{"http://a:1", 3, 1, 2}, {"http://b:1", 3, 1, 0}, {"http://c:1", 3, 1, 1}});
    auto policy = make_policy(RoutingLogic::session);
    for (std::uint64_t r = 0; r < 20; ++r) EXPECT_EQ(policy->pick(fleet, all_of(fleet), {"m", "", r}), 1u);
}

// ---------------------------------------------------------------- fixed hashes

TEST(HashFnv1a, MatchesTheReferenceVectors) {
    EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
    EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
    EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(HashServerUrl, IsTheHashOfTheCanonicalUrl) {
    for (const char* url : {"http://gpu-1:8081", "https://Example.com", "http://[::1]:9000/v1/", "http://h/base/path"}) {
        ServerConfig server;
        server.url = url;
        server.parts = *parse_url(url);
        EXPECT_EQ(server_url_hash(server), fnv1a64(canonical_url(server.parts))) << url;
    }
    ServerConfig unparsed;
    unparsed.url = "http://raw:1";
    EXPECT_EQ(server_url_hash(unparsed), fnv1a64("http://raw:1"));
}

// Pinned values: if one changes, replicas of two versions disagree and every session moves.
TEST(HashSession, IsStableAcrossVersions) {
    EXPECT_EQ(session_hash(fnv1a64("http://gpu-1:8081"), "user-1"), 0x931578cc12e70365ULL);
    EXPECT_EQ(session_hash(fnv1a64("http://gpu-2:8081"), "user-1"), 0xd50a80b7ac8a896fULL);
    EXPECT_EQ(session_hash(fnv1a64("http://gpu-1:8081"), "conversation-42"), 0x2093549903b6da13ULL);
}

}  // namespace
}  // namespace vllm_router
