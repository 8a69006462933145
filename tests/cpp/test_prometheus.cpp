#include "core/prometheus.hpp"

#include "vllm_metrics_text.hpp"

#include <gtest/gtest.h>

#include "exact_copy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vllm_router {
namespace {

using test::vllm_v1_metrics;

constexpr double nan = std::numeric_limits<double>::quiet_NaN();
constexpr double inf = std::numeric_limits<double>::infinity();

using testing_util::ExactCopy;

std::string with_crlf(const std::string& text) {
    std::string out;
    for (const char c : text) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

std::size_t count_lines(std::string_view text) {
    std::size_t n = 0;
    for (const char c : text) n += c == '\n';
    return n;
}

// Views into the text parsed, which outlives every Parsed in these tests.
struct Sample {
    std::string_view name;
    std::string_view labels;
    double value = 0;
};

bool operator==(const Sample& a, const Sample& b) {
    const bool same_value = (std::isnan(a.value) && std::isnan(b.value)) || a.value == b.value;
    return a.name == b.name && a.labels == b.labels && same_value;
}

std::ostream& operator<<(std::ostream& os, const Sample& s) {
    return os << s.name << "{" << s.labels << "} " << s.value;
}

struct Parsed {
    bool ok = false;
    std::string error;
    std::vector<Sample> samples;
};

Parsed parse_all(std::string_view text) {
    Parsed p;
    p.error = "untouched";
    p.ok = parse_prometheus(
        text,
        [&](const PromSample& s) {
            // The views point into the text.
            EXPECT_TRUE(s.name.data() >= text.data() &&
                        s.name.data() + s.name.size() <= text.data() + text.size());
            EXPECT_TRUE(s.labels.empty() ||
                        (s.labels.data() >= text.data() &&
                         s.labels.data() + s.labels.size() <= text.data() + text.size()));
            p.samples.push_back({s.name, s.labels, s.value});
        },
        &p.error);
    return p;
}

// ---- parse_prometheus ----

struct ParseCase {
    std::string name;
    std::string text;
    bool ok;
    std::string error;  // exact, when !ok
    std::vector<Sample> samples;
};

std::vector<ParseCase> parse_cases() {
    return {
        {"empty", "", true, "", {}},
        {"blank_lines_and_comments",
         "\n\n# HELP x Some help.\n  # indented comment\n#\n\t\n# EOF\n", true, "", {}},
        {"simple", "a 1\n", true, "", {{"a", "", 1}}},
        {"name_characters", "_x:y_Z9 2\n", true, "", {{"_x:y_Z9", "", 2}}},
        {"labels", "a{b=\"c\",d=\"e\"} 2\n", true, "", {{"a", "b=\"c\",d=\"e\"", 2}}},
        {"trailing_comma", "a{b=\"c\",} 2\n", true, "", {{"a", "b=\"c\",", 2}}},
        {"empty_label_set", "a{} 3\n", true, "", {{"a", "", 3}}},
        {"blanks_between_tokens", "  a { b = \"c\" ,\td=\"e\" }  4  \n", true, "",
         {{"a", " b = \"c\" ,\td=\"e\" ", 4}}},
        {"no_blank_after_brace", "a{b=\"c\"}5\n", true, "", {{"a", "b=\"c\"", 5}}},
        {"timestamps", "a 1 1718039123000\nb{c=\"d\"} 2 -5\nc 3\t1718039123.5 \n", true, "",
         {{"a", "", 1}, {"b", "c=\"d\"", 2}, {"c", "", 3}}},
        {"crlf", "# TYPE a gauge\r\na 1\r\n\r\nb 2\r\n", true, "", {{"a", "", 1}, {"b", "", 2}}},
        {"no_trailing_newline", "a 1\nb 2", true, "", {{"a", "", 1}, {"b", "", 2}}},
        {"special_values",
         "a NaN\nb +Inf\nc -Inf\nd nan\ne inf\nf +1.5e3\ng -0\nh .5\ni 1e-3\nj 7\nk 1.5E+2\n",
         true, "",
         {{"a", "", nan},
          {"b", "", inf},
          {"c", "", -inf},
          {"d", "", nan},
          {"e", "", inf},
          {"f", "", 1500},
          {"g", "", -0.0},
          {"h", "", 0.5},
          {"i", "", 0.001},
          {"j", "", 7},
          {"k", "", 150}}},
        {"escapes_and_delimiters_in_values",
         R"(a{path="C:\\dir",q="say \"hi\"",nl="x\ny",brace="} 9",comma="a,b",hash="#"} 1)"
         "\n",
         true, "",
         {{"a", R"(path="C:\\dir",q="say \"hi\"",nl="x\ny",brace="} 9",comma="a,b",hash="#")",
           1}}},
        {"escaped_backslash_before_quote", "a{b=\"\\\\\"} 1\n", true, "", {{"a", "b=\"\\\\\"", 1}}},

        {"missing_value", "a 1\nb\n", false, "line 2: missing value", {{"a", "", 1}}},
        {"missing_value_after_labels", "a{b=\"c\"}\n", false, "line 1: missing value", {}},
        {"missing_value_blanks", "a   \n", false, "line 1: missing value", {}},
        {"unterminated_label_value", "a 1\nb{c=\"d} 1\n", false,
         "line 2: unterminated label value", {{"a", "", 1}}},
        {"escape_at_end_of_line", "a{b=\"\\\n", false, "line 1: unterminated label value", {}},
        {"missing_closing_brace", "a{b=\"c\" 1\n", false,
         "line 1: expected ',' or '}' after a label", {}},
        {"missing_closing_brace_at_end", "a{b=\"c\",", false,
         "line 1: missing '}' after the labels", {}},
        {"garbage_value", "a abc\n", false, "line 1: value not a number", {}},
        {"value_with_suffix", "a 1x\n", false, "line 1: value not a number", {}},
        {"value_out_of_range", "a 1e400\n", false, "line 1: value out of range", {}},
        {"two_signs", "a +-1\n", false, "line 1: value not a number", {}},
        {"c_nan_payload", "a nan(1)\n", false, "line 1: value not a number", {}},
        {"hex_value", "a 0x10\n", false, "line 1: value not a number", {}},
        {"bad_timestamp", "a 1 soon\n", false, "line 1: timestamp not a number", {}},
        {"extra_token", "a 1 2 3\n", false, "line 1: unexpected text after the timestamp", {}},
        {"name_starts_with_digit", "1a 1\n", false, "line 1: expected a metric name", {}},
        {"labels_without_name", "{a=\"b\"} 1\n", false, "line 1: expected a metric name", {}},
        {"dash_in_name", "a-b 1\n", false, "line 1: invalid character in the metric name", {}},
        {"bad_label_name", "a{1b=\"c\"} 1\n", false, "line 1: expected a label name", {}},
        {"colon_in_label_name", "a{b:c=\"d\"} 1\n", false,
         "line 1: expected '=' after a label name", {}},
        {"unquoted_label_value", "a{b=c} 1\n", false, "line 1: expected a quoted label value",
         {}},
        {"double_comma", "a{b=\"c\",,} 1\n", false, "line 1: expected a label name", {}},
        {"bare_cr_inside_line", "a 1\rb 2\n", false, "line 1: value not a number", {}},
        {"line_numbers_count_every_line", "# c\n\na 1\r\n\r\nbad\n", false,
         "line 5: missing value", {{"a", "", 1}}},
        {"html_error_page", "<html><body>502 Bad Gateway</body></html>\n", false,
         "line 1: expected a metric name", {}},
    };
}

TEST(PromParser, Cases) {
    for (const auto& c : parse_cases()) {
        SCOPED_TRACE(c.name);
        const Parsed p = parse_all(c.text);
        EXPECT_EQ(p.ok, c.ok);
        EXPECT_EQ(p.error, c.ok ? "" : c.error);
        EXPECT_EQ(p.samples, c.samples);
    }
}

TEST(PromParser, NegativeZeroAndErrorPointerOptional) {
    EXPECT_TRUE(parse_prometheus("a -0\n", [](const PromSample& s) {
        EXPECT_TRUE(std::signbit(s.value));
    }));
    EXPECT_FALSE(parse_prometheus("a\n", [](const PromSample&) {}));
    EXPECT_TRUE(parse_prometheus("a 1\n", nullptr));
}

TEST(PromParser, RealisticExposition) {
    const Parsed p = parse_all(vllm_v1_metrics);
    ASSERT_TRUE(p.ok) << p.error;
    std::size_t sample_lines = 0;
    for (std::size_t pos = 0; pos < vllm_v1_metrics.size();) {
        const std::size_t eol = vllm_v1_metrics.find('\n', pos);
        sample_lines += vllm_v1_metrics[pos] != '#';
        pos = eol + 1;
    }
    EXPECT_EQ(p.samples.size(), sample_lines);
    EXPECT_EQ(p.samples.front(), (Sample{"python_gc_objects_collected_total", "generation=\"0\"",
                                         14521}));
    EXPECT_EQ(p.samples.back(), (Sample{"http_requests_total",
                                        "handler=\"/metrics\",method=\"GET\",status=\"2xx\"",
                                        5231}));
    const std::string crlf = with_crlf(vllm_v1_metrics);
    EXPECT_EQ(parse_all(crlf).samples, p.samples);
}

// The property checked at every split point p of a valid text T: parsing T[0, p) is exactly
// parsing its complete lines followed by its last, partial line on its own.
//   1. The complete lines parse and give the first k samples of T.
//   2. The prefix succeeds if and only if the partial line alone does; its samples are the k
//      samples then the partial line's; on failure the error is the partial line's, numbered
//      as a line of T.
//   3. A partial line gives at most one sample. If it gives one, its name and labels are
//      those of T's sample on that line (a cut in the name or labels can never parse), and its
//      value too when only the line end was cut away. A cut comment or blank line gives none.
// Together: the parser is line-local, never reads past the text (ASan builds check this), and
// a scrape cut short by a dropped connection is either caught on its last line or differs
// from the full one only in the last value.
void check_every_split_point(const std::string& text) {
    const Parsed whole = parse_all(text);
    ASSERT_TRUE(whole.ok) << whole.error;
    Parsed c;
    std::size_t c_start = 0;
    for (std::size_t p = 0; p <= text.size(); ++p) {
        SCOPED_TRACE("split at " + std::to_string(p));
        const std::string_view prefix = std::string_view(text).substr(0, p);
        const std::size_t cut = prefix.rfind('\n');
        const std::size_t tail_start = cut == std::string_view::npos ? 0 : cut + 1;
        const std::string_view complete = prefix.substr(0, tail_start);
        const std::string_view tail = prefix.substr(tail_start);

        // The complete lines are the same for every p on one line: parse them once per line.
        if (tail_start != c_start || p == 0) {
            c = parse_all(complete);
            c_start = tail_start;
            ASSERT_TRUE(c.ok) << c.error;
            ASSERT_LE(c.samples.size(), whole.samples.size());
            EXPECT_TRUE(std::equal(c.samples.begin(), c.samples.end(), whole.samples.begin()));
        }
        const std::size_t k = c.samples.size();

        const ExactCopy tail_copy(tail);
        const ExactCopy prefix_copy(prefix);
        const Parsed t = parse_all(tail_copy.view());
        const Parsed r = parse_all(prefix_copy.view());
        EXPECT_EQ(r.ok, t.ok);
        ASSERT_EQ(r.samples.size(), k + t.samples.size());
        EXPECT_TRUE(std::equal(c.samples.begin(), c.samples.end(), r.samples.begin()));
        EXPECT_TRUE(std::equal(t.samples.begin(), t.samples.end(), r.samples.begin() + k));
        if (!t.ok) {
            ASSERT_EQ(t.error.rfind("line 1: ", 0), 0u) << t.error;
            EXPECT_EQ(r.error, "line " + std::to_string(count_lines(complete) + 1) + ": " +
                                   t.error.substr(8));
        }

        ASSERT_LE(t.samples.size(), 1u);
        const std::size_t line_end = text.find('\n', tail_start);
        std::string_view full_line = std::string_view(text).substr(
            tail_start, line_end == std::string::npos ? std::string::npos : line_end - tail_start);
        const bool is_sample_line = !full_line.empty() && full_line.front() != '#' &&
                                    full_line.front() != '\r';
        if (!is_sample_line) {
            EXPECT_TRUE(t.ok) << t.error;
            EXPECT_TRUE(t.samples.empty());
        }
        if (t.samples.size() == 1) {
            ASSERT_TRUE(is_sample_line);
            ASSERT_LT(k, whole.samples.size());
            EXPECT_EQ(t.samples[0].name, whole.samples[k].name);
            EXPECT_EQ(t.samples[0].labels, whole.samples[k].labels);
            if (full_line.ends_with('\r')) full_line.remove_suffix(1);
            if (tail.size() >= full_line.size()) { EXPECT_EQ(t.samples[0], whole.samples[k]); }
        }
        if (p == text.size()) { EXPECT_EQ(r.samples, whole.samples); }
    }
}

TEST(PromParser, EverySplitPoint) {
    check_every_split_point(vllm_v1_metrics);
    check_every_split_point(with_crlf(vllm_v1_metrics));
    check_every_split_point(
        "# HELP x help\n"
        "x{a=\"q\\\"} 1,\\\\\",b=\"l\\nm\"} NaN 1718039123000\n"
        "y +Inf\n"
        "z{} -1.25e-3\n"
        "w 12345 -7");
}

// ---- prom_label ----

TEST(PromLabel, Cases) {
    struct Case {
        std::string labels;
        std::string key;
        std::optional<std::string> value;
    };
    const std::vector<Case> cases = {
        {"engine=\"0\",model_name=\"m\"", "engine", "0"},
        {"engine=\"0\",model_name=\"m\"", "model_name", "m"},
        {"engine=\"0\",model_name=\"m\"", "model", std::nullopt},
        {"engine_id=\"1\",engine=\"2\"", "engine", "2"},
        {R"(p="C:\\dir\\x")", "p", R"(C:\dir\x)"},
        {R"(q="say \"hi\"")", "q", "say \"hi\""},
        {R"(n="a\nb")", "n", "a\nb"},
        {R"(t="a\tb")", "t", R"(a\tb)"},
        {R"(a="}",b="x,y",c="d")", "b", "x,y"},
        {R"(a="}",b="x,y",c="d")", "c", "d"},
        {R"(a="")", "a", ""},
        {" a = \"1\" ,\tb = \"2\" ", "b", "2"},
        {R"(a="1",a="2")", "a", "1"},
        {R"(a=1,b="2")", "b", std::nullopt},
        {R"(b="2",=)", "b", "2"},
        {R"(a="unterminated)", "a", std::nullopt},
        {"", "a", std::nullopt},
        {"", "", std::nullopt},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(prom_label(c.labels, c.key), c.value) << c.labels << " / " << c.key;
    }
}

TEST(PromLabel, FromParsedSamples) {
    std::vector<std::optional<std::string>> engines;
    std::vector<std::optional<std::string>> models;
    ASSERT_TRUE(parse_prometheus(vllm_v1_metrics, [&](const PromSample& s) {
        if (s.name != "vllm:num_requests_running") return;
        engines.push_back(prom_label(s.labels, "engine"));
        models.push_back(prom_label(s.labels, "model_name"));
    }));
    EXPECT_EQ(engines, (std::vector<std::optional<std::string>>{"0", "1"}));
    const std::string model = "meta-llama/Llama-3.1-8B-Instruct";
    EXPECT_EQ(models, (std::vector<std::optional<std::string>>{model, model}));
}

// ---- parse_engine_metrics ----

struct EngineCase {
    std::string name;
    std::string text;
    bool ok = true;
    std::string error = "";  // exact, when !ok
    EngineMetrics expected = {};
};

EngineMetrics found(std::optional<double> running, std::optional<double> waiting,
                    std::optional<double> kv, std::optional<double> queries,
                    std::optional<double> hits) {
    EngineMetrics m;
    m.has_running = running.has_value();
    m.running = running.value_or(0);
    m.has_waiting = waiting.has_value();
    m.waiting = waiting.value_or(0);
    m.has_kv = kv.has_value();
    m.kv_cache_usage = kv.value_or(0);
    m.has_prefix = queries.has_value();
    m.prefix_cache_queries = queries.value_or(0);
    m.prefix_cache_hits = hits.value_or(0);
    return m;
}

const EngineMetrics nothing = found({}, {}, {}, {}, {});

std::vector<EngineCase> engine_cases() {
    const std::string bad_last_line = "vllm:num_requests_running{engine=\"2\"} oops\n";
    return {
        {"realistic", vllm_v1_metrics, true, "", found(5, 1, 0.375, 4000, 2000)},
        {"realistic_crlf", with_crlf(vllm_v1_metrics), true, "", found(5, 1, 0.375, 4000, 2000)},
        {"realistic_no_trailing_newline",
         vllm_v1_metrics.substr(0, vllm_v1_metrics.size() - 1), true, "",
         found(5, 1, 0.375, 4000, 2000)},
        {"empty", "", true, "", nothing},
        {"only_comments", "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running "
                          "gauge\n",
         true, "", nothing},
        {"other_metrics_only", "process_cpu_seconds_total 12.5\nup 1\n", true, "", nothing},
        {"no_labels_summed", "vllm:num_requests_running 4\nvllm:num_requests_running 1\n", true,
         "", found(5, {}, {}, {}, {})},
        {"deprecated_names",
         "vllm:num_requests_waiting{engine=\"0\"} 2\n"
         "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.25\n"
         "vllm:gpu_cache_usage_perc{engine=\"1\"} 0.75\n"
         "vllm:gpu_prefix_cache_queries_total{engine=\"0\"} 100\n"
         "vllm:gpu_prefix_cache_hits_total{engine=\"0\"} 40\n",
         true, "", found({}, 2, 0.5, 100, 40)},
        {"deprecated_counters_without_total",
         "vllm:gpu_prefix_cache_queries 10\nvllm:gpu_prefix_cache_hits 5\n", true, "",
         found({}, {}, {}, 10, 5)},
        {"current_counters_without_total",
         "vllm:gpu_prefix_cache_queries_total 999\nvllm:gpu_prefix_cache_hits_total 1\n"
         "vllm:prefix_cache_queries 10\nvllm:prefix_cache_hits 1\n",
         true, "", found({}, {}, {}, 10, 1)},
        {"current_wins_over_deprecated",
         "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.9\n"
         "vllm:gpu_prefix_cache_queries_total{engine=\"0\"} 999\n"
         "vllm:gpu_prefix_cache_hits_total{engine=\"0\"} 1\n"
         "vllm:kv_cache_usage_perc{engine=\"0\"} 0.5\n"
         "vllm:prefix_cache_queries_total{engine=\"0\"} 100\n"
         "vllm:prefix_cache_hits_total{engine=\"0\"} 50\n"
         "vllm:prefix_cache_queries{engine=\"0\"} 7\n"
         "vllm:prefix_cache_hits{engine=\"0\"} 7\n",
         true, "", found({}, {}, 0.5, 100, 50)},
        {"prefix_pairs_never_mixed",
         "vllm:prefix_cache_queries_total 100\n"
         "vllm:gpu_prefix_cache_queries_total 20\nvllm:gpu_prefix_cache_hits_total 10\n",
         true, "", found({}, {}, {}, 20, 10)},
        {"half_a_pair_is_not_found", "vllm:prefix_cache_hits_total 3\n", true, "", nothing},
        {"nan_and_inf_ignored",
         "vllm:num_requests_running{engine=\"0\"} NaN\n"
         "vllm:num_requests_running{engine=\"1\"} 2\n"
         "vllm:num_requests_waiting{engine=\"0\"} +Inf\n"
         "vllm:kv_cache_usage_perc{engine=\"0\"} -Inf\n"
         "vllm:kv_cache_usage_perc{engine=\"1\"} 0.5\n"
         "vllm:prefix_cache_queries_total{engine=\"0\"} 10\n"
         "vllm:prefix_cache_queries_total{engine=\"1\"} NaN\n"
         "vllm:prefix_cache_hits_total{engine=\"0\"} 4\n",
         true, "", found(2, {}, 0.5, 10, 4)},
        {"current_all_nan_falls_back",
         "vllm:kv_cache_usage_perc NaN\nvllm:gpu_cache_usage_perc 0.5\n", true, "",
         found({}, {}, 0.5, {}, {})},
        {"names_match_exactly",
         "vllm:num_requests_running_foo 7\nvllm:num_requests_runnin 7\n"
         "xvllm:num_requests_running 7\nvllm: 7\nvllm 7\nVLLM:num_requests_running 7\n"
         "vllm:num_requests_waiting_by_reason{reason=\"capacity\"} 7\n"
         "vllm:kv_cache_usage_perc_bucket{le=\"0.5\"} 7\n"
         "vllm:prefix_cache_queries_created 1.7e9\nvllm:prefix_cache_hits_created 1.7e9\n"
         "vllm:prefix_cache_queries_total_count 7\nvllm:prefix_cache_hits_total_sum 7\n",
         true, "", nothing},
        {"tricky_labels_and_timestamp",
         "vllm:num_requests_running{model_name=\"a} 9\\\",b\",engine=\"0\"} 2 1718039123000\n"
         "vllm:num_requests_waiting{engine=\"0\",path=\"C:\\\\\"} 4 1718039123000\n",
         true, "", found(2, 4, {}, {}, {})},
        {"malformed_after_the_metrics", vllm_v1_metrics + bad_last_line, false,
         "line " + std::to_string(count_lines(vllm_v1_metrics) + 1) + ": value not a number"},
        {"malformed_in_the_middle",
         "vllm:num_requests_running 1\nvllm:num_requests_waiting{engine=\"0} 1\n"
         "vllm:num_requests_running 1\n",
         false, "line 2: unterminated label value"},
        {"html_instead_of_metrics", "<!doctype html>\n<title>404</title>\n", false,
         "line 1: expected a metric name"},
    };
}

TEST(PromEngineMetrics, Cases) {
    for (const auto& c : engine_cases()) {
        SCOPED_TRACE(c.name);
        std::string error = "untouched";
        const auto m = parse_engine_metrics(c.text, &error);
        ASSERT_EQ(m.has_value(), c.ok) << error;
        if (!c.ok) {
            EXPECT_EQ(error, c.error);
            continue;
        }
        EXPECT_EQ(error, "");
        const EngineMetrics& e = c.expected;
        EXPECT_EQ(m->has_running, e.has_running);
        EXPECT_EQ(m->has_waiting, e.has_waiting);
        EXPECT_EQ(m->has_kv, e.has_kv);
        EXPECT_EQ(m->has_prefix, e.has_prefix);
        EXPECT_DOUBLE_EQ(m->running, e.running);
        EXPECT_DOUBLE_EQ(m->waiting, e.waiting);
        EXPECT_DOUBLE_EQ(m->kv_cache_usage, e.kv_cache_usage);
        EXPECT_DOUBLE_EQ(m->prefix_cache_queries, e.prefix_cache_queries);
        EXPECT_DOUBLE_EQ(m->prefix_cache_hits, e.prefix_cache_hits);
    }
}

TEST(PromEngineMetrics, HitRate) {
    const auto m = parse_engine_metrics(vllm_v1_metrics);
    ASSERT_TRUE(m);
    EXPECT_DOUBLE_EQ(m->prefix_cache_hit_rate(), 0.5);
    EXPECT_EQ(EngineMetrics{}.prefix_cache_hit_rate(), 0.0);
    const auto zero = parse_engine_metrics(
        "vllm:prefix_cache_queries_total 0\nvllm:prefix_cache_hits_total 0\n");
    ASSERT_TRUE(zero);
    EXPECT_TRUE(zero->has_prefix);
    EXPECT_EQ(zero->prefix_cache_hit_rate(), 0.0);
}

TEST(PromEngineMetrics, ErrorPointerOptional) {
    EXPECT_FALSE(parse_engine_metrics("vllm:num_requests_running\n"));
    EXPECT_TRUE(parse_engine_metrics(""));
}

}  // namespace
}  // namespace vllm_router
