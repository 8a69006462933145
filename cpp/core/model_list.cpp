#include "core/model_list.hpp"

#include <simdjson.h>

namespace vllm_router {

std::optional<std::vector<ModelEntry>> parse_model_list(std::string_view json) {
    // The control plane reads few, small answers: the copying (padded) path is fine here.
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(json.data(), json.size()).get(root)) return std::nullopt;
    simdjson::dom::array data;
    if (root["data"].get_array().get(data)) return std::nullopt;
    std::vector<ModelEntry> entries;
    for (simdjson::dom::element entry : data) {
        std::string_view id;
        if (!entry.is_object() || entry["id"].get_string().get(id)) return std::nullopt;
        if (!id.empty()) entries.push_back({std::string(id), simdjson::to_string(entry)});
    }
    return entries;
}

}  // namespace vllm_router
