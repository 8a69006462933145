// ${VAR} and ${VAR:-default} in the configuration file's string values, so that a secret (a
// server's api_key from a Kubernetes Secret, say) reaches the file through the environment.
//
// The rules, as in shells and Compose files:
// - `${NAME}` is the variable's value; unset is an error (a typo must not become an empty key);
// - `${NAME:-default}` is the value, or `default` when NAME is unset or empty;
// - `$${` is a literal `${`; a `$` not followed by `{` stays as it is;
// - NAME is letters, digits and `_`, not starting with a digit; the default is literal text
//   (no nesting) and ends at the first `}`.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace vllm_router {

// The value of an environment variable, or nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// The process environment (getenv).
std::optional<std::string> process_env(const std::string& name);

struct ExpandError {
    std::string message;  // names the variable or the malformed reference, never a value
};

// `text` with its references replaced, or the first problem found.
std::variant<std::string, ExpandError> expand_env(std::string_view text, const EnvLookup& lookup);

// Whether `text` holds any `${` at all (the common case is none: the text is used as it is).
inline bool has_env_reference(std::string_view text) { return text.find("${") != std::string_view::npos; }

}  // namespace vllm_router
