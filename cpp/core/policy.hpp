// Routing policies: which of the eligible servers (healthy, serving the model, not yet tried for
// this request; see eligible_members) gets a request. The data plane calls pick() on every
// attempt, retries included, so a policy sees only the servers it may use. One Policy instance
// is shared by all I/O threads: pick() is lock-free (stateless, or one atomic counter).
//
//   least-load  lowest (running*3 + waiting) / (capacity * weight), random among ties
//               (pick_least_load in fleet.hpp).
//   roundrobin  one shared atomic counter walks the candidates in fleet order. Equal weights:
//               plain cycling, each server once per round. Unequal weights: each server gets
//               slots in proportion to its weight (relative to the smallest, to 1/8), and the
//               counter visits the round's slots by a golden-ratio stride so that a heavy server's
//               turns are spread through the round instead of coming in one burst. The counter is
//               shared by all models, so with several models each one's sequence interleaves.
//   random      uniform over the candidates, or proportional to weight when weights differ.
//   session     rendezvous (highest-random-weight) hashing of the session value (the session
//               header, else the body's "user") against each candidate's canonical URL: every
//               router replica with the same servers picks the same one without talking, and
//               adding or removing a server moves only that server's share of sessions. Weighted
//               by -weight / ln(u), u the hash mapped into (0, 1); with equal weights the hashes
//               are compared directly, so no floating-point libm result can differ between
//               platforms. Load is ignored. No session value: least-load.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/fleet.hpp"

namespace vllm_router {

enum class RoutingLogic { least_load, roundrobin, random, session };

// "least-load", "roundrobin", "random", "session" (the names of routing_logics()).
std::optional<RoutingLogic> parse_routing_logic(std::string_view name);
const char* to_string(RoutingLogic logic);

struct RouteRequest {
    std::string_view model;              // "" when the request names none
    std::string_view session_key_value;  // the session header's value, else the body's "user"
    std::uint64_t random = 0;            // a fresh random number
};

class Policy {
public:
    virtual ~Policy() = default;
    // Returns an index into `candidates`, which must not be empty.
    virtual std::size_t pick(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                             const RouteRequest& req) = 0;
};

std::unique_ptr<Policy> make_policy(RoutingLogic logic);

// The fixed hashes behind `session`. They must never change between versions: replicas of
// different versions behind one Service would disagree, and every session would move.
std::uint64_t fnv1a64(std::string_view bytes);
// FNV-1a 64 of the server's canonical URL (canonical_url), computed without building it; a
// member whose URL was never parsed hashes its url as written.
std::uint64_t server_url_hash(const ServerConfig& server);
// The rendezvous hash of one (server, session) pair: murmur3's 64-bit finalizer over both.
std::uint64_t session_hash(std::uint64_t server_hash, std::string_view session_value);

}  // namespace vllm_router
