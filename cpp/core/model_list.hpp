// Reads an OpenAI `GET /v1/models` answer ({"data": [{"id": ...}, ...]}) into its models: each
// id with the engine's whole entry, kept so that /v1/models through the router shows what the
// engine said of the model (vLLM's max_model_len, root, parent, permission; a LoRA adapter is
// told from its base model by parent and root).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vllm_router {

struct ModelEntry {
    std::string id;
    std::string json;  // the entry as one JSON object, minified; "" when not from an engine
};

// The entries of "data" with a non-empty id, in order; nullopt when the text is not that shape.
std::optional<std::vector<ModelEntry>> parse_model_list(std::string_view json);

}  // namespace vllm_router
