// ${VAR} and ${VAR:-default} in configuration strings: each rule of core/env_expand.hpp, and the
// located error an unset variable gives in a whole configuration file.
#include <gtest/gtest.h>

#include <map>

#include "core/config.hpp"
#include "core/env_expand.hpp"

namespace vllm_router {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        if (it == vars.end()) return std::nullopt;
        return it->second;
    };
}

std::string expanded(std::string_view text, const EnvLookup& env) {
    auto r = expand_env(text, env);
    if (auto* e = std::get_if<ExpandError>(&r)) return "error: " + e->message;
    return std::get<std::string>(r);
}

TEST(EnvExpand, ReplacesReferencesAndKeepsTheRest) {
    const auto env = env_of({{"KEY", "s3cret"}, {"EMPTY", ""}, {"HOST", "gpu-1"}});
    EXPECT_EQ(expanded("no references", env), "no references");
    EXPECT_EQ(expanded("${KEY}", env), "s3cret");
    EXPECT_EQ(expanded("http://${HOST}:${PORT:-8000}/v1", env), "http://gpu-1:8000/v1");
    EXPECT_EQ(expanded("${EMPTY}", env), "");                     // set but empty: its value
    EXPECT_EQ(expanded("${EMPTY:-fallback}", env), "fallback");   // :- covers empty too
    EXPECT_EQ(expanded("${KEY:-unused}", env), "s3cret");
    EXPECT_EQ(expanded("${UNSET:-}", env), "");
    EXPECT_EQ(expanded("${UNSET:-a:b-c}", env), "a:b-c");
    EXPECT_EQ(expanded("cost $5 and $KEY", env), "cost $5 and $KEY");  // only ${ is a reference
    EXPECT_EQ(expanded("$${KEY} is literal", env), "${KEY} is literal");
    EXPECT_EQ(expanded("trailing $", env), "trailing $");
}

TEST(EnvExpand, ProblemsNameTheVariableNeverAValue) {
    const auto env = env_of({{"KEY", "s3cret"}});
    EXPECT_EQ(expanded("${MISSING}", env),
              "error: environment variable MISSING is not set (give a default with ${MISSING:-default})");
    EXPECT_NE(expanded("${KEY", env).find("unclosed ${"), std::string::npos);
    EXPECT_NE(expanded("${1BAD}", env).find("not a variable reference"), std::string::npos);
    EXPECT_NE(expanded("${}", env).find("not a variable reference"), std::string::npos);
    EXPECT_NE(expanded("${A B}", env).find("not a variable reference"), std::string::npos);
}

TEST(EnvExpand, ConfigStringsExpandAndAnUnsetVariableIsALocatedError) {
    const std::string doc =
        "[servers]\n"
        "servers = [\n"
        "  { url = \"http://${GPU_HOST}:8000\", api_key = \"${GPU_KEY}\", models = [\"${MODEL:-llama}\"] },\n"
        "  { url = \"http://b:8000\", api_key = \"${NOT_SET}\" },\n"
        "]\n"
        "[config]\n"
        "session_key = \"${SESSION_HEADER:-x-user}\"\n";
    auto r = parse_config(doc, "servers.toml", env_of({{"GPU_HOST", "gpu-1"}, {"GPU_KEY", "k-123"}}));
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_EQ(r.errors[0].line, 4);
    EXPECT_EQ(r.errors[0].key, "servers[1].api_key");
    EXPECT_NE(r.errors[0].message.find("NOT_SET is not set"), std::string::npos);
    ASSERT_EQ(r.config.servers.size(), 2u);
    EXPECT_EQ(r.config.servers[0].url, "http://gpu-1:8000");
    EXPECT_EQ(r.config.servers[0].parts.host, "gpu-1");
    EXPECT_EQ(r.config.servers[0].api_key, "k-123");
    EXPECT_EQ(r.config.servers[0].models.at(0), "llama");
    EXPECT_EQ(r.config.settings.session_key, "x-user");
}

TEST(EnvExpand, AFailedUrlGivesOneErrorNotTwo) {
    auto r = parse_config("[servers]\nservers = [{ url = \"${NOWHERE}\" }]\n", "servers.toml", env_of({}));
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_EQ(r.errors[0].key, "servers[0].url");
    EXPECT_NE(r.errors[0].message.find("NOWHERE"), std::string::npos);
}

}  // namespace
}  // namespace vllm_router
