#include "core/env_expand.hpp"

#include <cctype>
#include <cstdlib>

namespace vllm_router {
namespace {

bool valid_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
    return true;
}

}  // namespace

std::optional<std::string> process_env(const std::string& name) {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
}

std::variant<std::string, ExpandError> expand_env(std::string_view text, const EnvLookup& lookup) {
    std::string out;
    out.reserve(text.size());
    std::size_t i = 0;
    while (i < text.size()) {
        const std::size_t dollar = text.find('$', i);
        if (dollar == std::string_view::npos) {
            out.append(text.substr(i));
            break;
        }
        out.append(text.substr(i, dollar - i));
        const std::string_view rest = text.substr(dollar);
        if (rest.substr(0, 3) == "$${") {  // escaped: a literal ${
            out += "${";
            i = dollar + 3;
            continue;
        }
        if (rest.substr(0, 2) != "${") {
            out += '$';
            i = dollar + 1;
            continue;
        }
        const std::size_t close = rest.find('}');
        if (close == std::string_view::npos)
            return ExpandError{"unclosed ${ (write ${NAME} or ${NAME:-default}; $${ for a literal ${)"};
        const std::string_view inner = rest.substr(2, close - 2);
        const std::size_t sep = inner.find(":-");
        const std::string_view name = inner.substr(0, sep);
        if (!valid_name(name))
            return ExpandError{"${" + std::string(inner) +
                               "} is not a variable reference (a name is letters, digits and _)"};
        const auto value = lookup(std::string(name));
        if (sep != std::string_view::npos) {
            if (value && !value->empty()) out += *value;
            else out.append(inner.substr(sep + 2));
        } else if (value) {
            out += *value;
        } else {
            return ExpandError{"environment variable " + std::string(name) +
                               " is not set (give a default with ${" + std::string(name) + ":-default})"};
        }
        i = dollar + close + 1;
    }
    return out;
}

}  // namespace vllm_router
