// Request inspection: the few facts the router needs from a request body before it picks a
// backend (model, stream, user), read without copying the body, which is then forwarded as
// received. JSON bodies go through simdjson's on-demand parser; multipart bodies (audio uploads)
// are scanned for one form field.
//
// How much of a JSON body is validated (a decision, not an accident):
//   - the top level must be an object, every one of its fields is iterated, and nothing but
//     whitespace may follow it, so a truncated or structurally broken top level is rejected;
//   - "model" must be a string, "stream" a boolean; null counts as absent for both, because
//     vLLM declares them optional and accepts null; any other type makes the body invalid;
//   - "user" is read when it is a string and ignored otherwise;
//   - other values are skipped by structure only: errors inside them (a bad number, a bad escape
//     deep in "messages") are left to the engine, which answers 400 itself;
//   - keys are compared after unescaping, and when a key repeats the last occurrence wins, as
//     in Python's json module that vLLM uses.
// No exception leaves these functions except std::bad_alloc.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace vllm_router {

struct RequestInfo {
    bool valid = false;   // body is a well-formed JSON object, as described above
    std::string error;    // when !valid: one sentence for an OpenAI-shaped 400
    std::string model;    // "" when absent
    bool has_model = false;
    bool stream = false;  // "stream": true
    std::string user;     // "user" string field, "" if absent (session affinity)
};

// `data` points to `size` bytes of body inside a buffer of `capacity` bytes (capacity >= size).
// When capacity - size >= simdjson::SIMDJSON_PADDING the body is parsed in place; otherwise it
// is copied once into a padded buffer. Each thread reuses one parser; a parser grown past a few
// MiB by a large body is released afterwards so that idle threads do not hold that memory.
RequestInfo inspect_json(const char* data, std::size_t size, std::size_t capacity);

// Always the copying path.
RequestInfo inspect_json(std::string_view body);

// The boundary parameter of a multipart/form-data Content-Type, quoted or not; nullopt when the
// media type is not multipart/form-data or the boundary is missing or empty.
std::optional<std::string> multipart_boundary(std::string_view content_type);

// The value of the form field `name` (Content-Disposition: form-data; name="...") in a
// multipart body, nullopt when absent or when the body is malformed before the field ends.
// Parts that carry a filename are files, never fields. Header names and the disposition
// parameters are case-insensitive, the field name is not. The value is the part's content
// without the line break that belongs to the next delimiter. Line endings may be CRLF
// (RFC 7578) or bare LF, which some hand-written clients send. When a field repeats, the last
// one wins, like Starlette's form parser in front of vLLM.
std::optional<std::string> multipart_field(std::string_view body, std::string_view boundary,
                                           std::string_view name);

}  // namespace vllm_router
