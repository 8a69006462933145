#include "core/fleet.hpp"

#include <algorithm>

namespace vllm_router {

bool FleetMember::serves(std::string_view model) const {
    return std::find(models.begin(), models.end(), model) != models.end();
}

std::vector<std::string> Fleet::healthy_models() const {
    std::vector<std::string> out;
    for (const auto& m : members)
        if (m.healthy) out.insert(out.end(), m.models.begin(), m.models.end());
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

bool Fleet::knows_model(std::string_view model) const {
    return std::any_of(members.begin(), members.end(), [&](const FleetMember& m) { return m.serves(model); });
}

std::string_view Fleet::model_label(std::string_view model) const {
    if (model.empty() || knows_model(model)) return model;
    for (const auto& m : draining)
        if (m.serves(model)) return model;
    return "other";
}

std::vector<std::size_t> eligible_members(const Fleet& fleet, std::string_view model,
                                          const std::vector<std::size_t>& exclude) {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < fleet.members.size(); ++i) {
        const auto& m = fleet.members[i];
        if (!m.healthy || !m.models_known) continue;
        if (!model.empty() && !m.serves(model)) continue;
        if (std::find(exclude.begin(), exclude.end(), i) != exclude.end()) continue;
        out.push_back(i);
    }
    return out;
}

double load_score(const FleetMember& m) {
    const double own = m.state ? static_cast<double>(m.state->in_flight.load(std::memory_order_relaxed)) : 0.0;
    // The scrape lags behind the router's own count but also sees other clients' traffic: the
    // larger of the two is the best estimate of what is running now.
    const double running = std::max(own, m.running);
    const double capacity = std::max(1, m.config.max_concurrent_requests) * m.config.weight;
    return (running * 3 + m.waiting) / capacity;
}

std::size_t pick_least_load(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                            std::uint64_t random) {
    std::size_t best = 0, ties = 0;
    double best_score = 0;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        const double s = load_score(fleet.members[candidates[i]]);
        if (i == 0 || s < best_score) {
            best = i;
            best_score = s;
            ties = 1;
        } else if (s == best_score) {
            // Reservoir choice among equals: each tie wins with probability 1/ties.
            ++ties;
            random = random * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((random >> 33) % ties == 0) best = i;
        }
    }
    return best;
}

}  // namespace vllm_router
