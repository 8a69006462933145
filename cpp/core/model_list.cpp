#include "core/model_list.hpp"

#include <simdjson.h>

namespace vllm_router {

std::optional<std::vector<std::string>> parse_model_list(std::string_view json) {
    // The control plane reads few, small answers: the copying (padded) path is fine here.
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(json.data(), json.size()).get(root)) return std::nullopt;
    simdjson::dom::array data;
    if (root["data"].get_array().get(data)) return std::nullopt;
    std::vector<std::string> ids;
    for (simdjson::dom::element entry : data) {
        std::string_view id;
        if (entry["id"].get_string().get(id)) return std::nullopt;
        if (!id.empty()) ids.emplace_back(id);
    }
    return ids;
}

}  // namespace vllm_router
