// Reads an OpenAI `GET /v1/models` answer ({"data": [{"id": ...}, ...]}) into model names.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vllm_router {

// The ids in "data", in order; nullopt when the text is not that shape.
std::optional<std::vector<std::string>> parse_model_list(std::string_view json);

}  // namespace vllm_router
