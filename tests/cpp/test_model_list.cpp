// Reading an engine's /v1/models: ids and whole entries, as vLLM writes them.
#include <gtest/gtest.h>

#include "core/model_list.hpp"

namespace vllm_router {
namespace {

// vLLM 0.32's answer for a base model and a LoRA adapter on it (ids shortened).
constexpr std::string_view kVllmModels = R"({"object":"list","data":[
 {"id":"tiny","object":"model","created":1796231574,"owned_by":"vllm","root":"/m/tiny","parent":null,
  "max_model_len":4096,"permission":[{"id":"modelperm-b07","object":"model_permission","created":1796231574,
  "allow_create_engine":false,"allow_sampling":true,"organization":"*","group":null,"is_blocking":false}]},
 {"id":"tiny-lora","object":"model","created":1796231574,"owned_by":"vllm","root":"/m/lora","parent":"tiny",
  "max_model_len":null,"permission":[]}]})";

TEST(ModelList, KeepsEveryFieldOfEachEntry) {
    const auto entries = parse_model_list(kVllmModels);
    ASSERT_TRUE(entries);
    ASSERT_EQ(entries->size(), 2u);
    EXPECT_EQ((*entries)[0].id, "tiny");
    EXPECT_EQ((*entries)[1].id, "tiny-lora");
    const std::string& base = (*entries)[0].json;
    EXPECT_EQ(base.front(), '{');
    for (std::string_view field : {R"("max_model_len":4096)", R"("root":"/m/tiny")", R"("parent":null)",
                                   R"("organization":"*")", R"("owned_by":"vllm")"})
        EXPECT_NE(base.find(field), std::string::npos) << field << " in " << base;
    EXPECT_NE((*entries)[1].json.find(R"("parent":"tiny")"), std::string::npos);
    // Minified: one entry is one line, whatever the engine's layout.
    EXPECT_EQ(base.find('\n'), std::string::npos);
}

TEST(ModelList, RejectsWhatIsNotAModelList) {
    for (std::string_view bad : {"", "[]", "{}", R"({"data":{}})", R"({"data":[{"name":"x"}]})",
                                 R"({"data":[{"id":7}]})", R"({"data":["tiny"]})", R"({"data":[{"id":"a"})"})
        EXPECT_FALSE(parse_model_list(bad)) << bad;
}

TEST(ModelList, SkipsEmptyIdsAndAcceptsAnEmptyList) {
    const auto entries = parse_model_list(R"({"data":[{"id":""},{"id":"m"}]})");
    ASSERT_TRUE(entries);
    ASSERT_EQ(entries->size(), 1u);
    EXPECT_EQ((*entries)[0].json, R"({"id":"m"})");
    EXPECT_TRUE(parse_model_list(R"({"object":"list","data":[]})")->empty());
}

}  // namespace
}  // namespace vllm_router
