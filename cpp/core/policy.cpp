#include "core/policy.hpp"
#include "core/text.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>

namespace vllm_router {

namespace {

struct Fnv1a {
    std::uint64_t h = kFnvOffset;
    void add(std::string_view bytes) { h = fnv1a(bytes, h); }
};

// murmur3's fmix64: every input bit flips each output bit with probability about 1/2.
std::uint64_t fmix64(std::uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

// splitmix64's output function: spreads a caller's random number that may be weak in some bits.
std::uint64_t spread(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// A uniform double in [0, 1) from the top 53 bits.
double unit_interval(std::uint64_t x) { return static_cast<double>(x >> 11) * 0x1p-53; }

// Validation guarantees weight > 0; anything else counts as 1 rather than starving a server.
double weight_of(const FleetMember& m) {
    const double w = m.config.weight;
    return std::isfinite(w) && w > 0 ? w : 1.0;
}

bool equal_weights(const Fleet& fleet, const std::vector<std::size_t>& candidates) {
    const double first = weight_of(fleet.members[candidates.front()]);
    return std::all_of(candidates.begin(), candidates.end(),
                       [&](std::size_t i) { return weight_of(fleet.members[i]) == first; });
}

std::uint64_t session_hash_of(std::uint64_t server_hash, std::uint64_t mixed_key) {
    return fmix64(mixed_key ^ fmix64(server_hash));
}

class LeastLoadPolicy final : public Policy {
public:
    std::size_t pick(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                     const RouteRequest& req) override {
        return pick_least_load(fleet, candidates, req.random);
    }
};

class RoundRobinPolicy final : public Policy {
public:
    std::size_t pick(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                     const RouteRequest&) override {
        const std::uint64_t turn = counter_.fetch_add(1, std::memory_order_relaxed);
        const std::size_t n = candidates.size();
        if (n == 1 || equal_weights(fleet, candidates)) return turn % n;

        double min_weight = weight_of(fleet.members[candidates.front()]);
        for (const std::size_t i : candidates) min_weight = std::min(min_weight, weight_of(fleet.members[i]));
        auto slots = [&](std::size_t c) -> std::uint64_t {
            const double r = std::round(weight_of(fleet.members[candidates[c]]) / min_weight * 8);
            return static_cast<std::uint64_t>(std::clamp(r, 1.0, 65536.0));
        };
        std::uint64_t divisor = 0, round = 0;
        for (std::size_t c = 0; c < n; ++c) {
            divisor = std::gcd(divisor, slots(c));
            round += slots(c);
        }
        round /= divisor;
        if (round == n || round >= (1ULL << 32)) return turn % n;

        // A stride coprime with the round visits every slot once per round, well spread.
        std::uint64_t stride = static_cast<std::uint64_t>(std::llround(static_cast<double>(round) * 0.6180339887498949));
        stride = std::clamp<std::uint64_t>(stride, 1, round - 1);
        while (std::gcd(stride, round) != 1) ++stride;
        std::uint64_t slot = (turn % round) * stride % round;
        for (std::size_t c = 0; c < n; ++c) {
            const std::uint64_t s = slots(c) / divisor;
            if (slot < s) return c;
            slot -= s;
        }
        return n - 1;
    }

private:
    std::atomic<std::uint64_t> counter_{0};
};

class RandomPolicy final : public Policy {
public:
    std::size_t pick(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                     const RouteRequest& req) override {
        const std::uint64_t r = spread(req.random);
        const std::size_t n = candidates.size();
        if (n == 1 || equal_weights(fleet, candidates)) return r % n;
        double total = 0;
        for (const std::size_t i : candidates) total += weight_of(fleet.members[i]);
        double x = unit_interval(r) * total;
        for (std::size_t c = 0; c < n; ++c) {
            x -= weight_of(fleet.members[candidates[c]]);
            if (x < 0) return c;
        }
        return n - 1;
    }
};

class SessionPolicy final : public Policy {
public:
    std::size_t pick(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                     const RouteRequest& req) override {
        if (req.session_key_value.empty()) return pick_least_load(fleet, candidates, req.random);
        const std::uint64_t key = fmix64(fnv1a64(req.session_key_value));
        const bool weighted = !equal_weights(fleet, candidates);
        std::size_t best = 0;
        std::uint64_t best_hash = 0, best_server = 0;
        double best_score = 0;
        for (std::size_t c = 0; c < candidates.size(); ++c) {
            const FleetMember& m = fleet.members[candidates[c]];
            const std::uint64_t server = server_url_hash(m.config);
            const std::uint64_t h = session_hash_of(server, key);
            // Weighted rendezvous: -w / ln(u) with u in (0, 1) is the largest for the winner.
            const double score = weighted ? -weight_of(m) / std::log(unit_interval(h) + 0x1p-54) : 0;
            // Ties go to the larger server hash, never to the order of the configuration.
            const bool better = c == 0 ||
                                (weighted ? (score > best_score || (score == best_score && server > best_server))
                                          : (h > best_hash || (h == best_hash && server > best_server)));
            if (better) {
                best = c;
                best_hash = h;
                best_server = server;
                best_score = score;
            }
        }
        return best;
    }
};

}  // namespace

std::optional<RoutingLogic> parse_routing_logic(std::string_view name) {
    if (name == "least-load") return RoutingLogic::least_load;
    if (name == "roundrobin") return RoutingLogic::roundrobin;
    if (name == "random") return RoutingLogic::random;
    if (name == "session") return RoutingLogic::session;
    return std::nullopt;
}

const char* to_string(RoutingLogic logic) {
    switch (logic) {
        case RoutingLogic::least_load: return "least-load";
        case RoutingLogic::roundrobin: return "roundrobin";
        case RoutingLogic::random: return "random";
        case RoutingLogic::session: return "session";
    }
    return "unknown";
}

std::unique_ptr<Policy> make_policy(RoutingLogic logic) {
    switch (logic) {
        case RoutingLogic::roundrobin: return std::make_unique<RoundRobinPolicy>();
        case RoutingLogic::random: return std::make_unique<RandomPolicy>();
        case RoutingLogic::session: return std::make_unique<SessionPolicy>();
        case RoutingLogic::least_load: break;
    }
    return std::make_unique<LeastLoadPolicy>();
}

std::uint64_t fnv1a64(std::string_view bytes) {
    Fnv1a f;
    f.add(bytes);
    return f.h;
}

std::uint64_t server_url_hash(const ServerConfig& server) {
    const UrlParts& p = server.parts;
    if (p.host.empty()) return fnv1a64(server.url);
    // The bytes of canonical_url(p), fed piece by piece.
    Fnv1a f;
    f.add(p.scheme);
    f.add("://");
    const bool v6 = p.host.find(':') != std::string::npos;
    if (v6) f.add("[");
    f.add(p.host);
    if (v6) f.add("]");
    f.add(":");
    char port[8];
    const auto end = std::to_chars(port, port + sizeof port, p.port).ptr;
    f.add(std::string_view(port, static_cast<std::size_t>(end - port)));
    f.add(p.base_path);
    return f.h;
}

std::uint64_t session_hash(std::uint64_t server_hash, std::string_view session_value) {
    return session_hash_of(server_hash, fmix64(fnv1a64(session_value)));
}

}  // namespace vllm_router
