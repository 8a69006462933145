// Small JSON writing helpers for the router's own answers (errors, admin endpoints). Reading
// JSON is simdjson's job (inspect.hpp); writing the few shapes we emit needs only escaping.
#pragma once

#include <string>
#include <string_view>

namespace vllm_router {

// Appends `s` to `out` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view s);

// `s` as a quoted JSON string.
std::string json_string(std::string_view s);

// A number rendered for JSON: finite values with up to `precision` decimals, NaN/Inf as null.
std::string json_number(double v, int precision = 3);

// The OpenAI error shape: {"error": {"message": ..., "type": ..., "code": status}}.
std::string openai_error_body(int status, std::string_view message, std::string_view type);

// The error type OpenAI clients expect for a status ("invalid_request_error", ...).
std::string_view error_type_for_status(int status);

}  // namespace vllm_router
