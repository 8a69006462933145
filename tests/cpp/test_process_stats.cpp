// The process_* figures: parsing /proc/<pid>/stat, and the live reading of this test process.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include "core/process_stats.hpp"

namespace vllm_router {
namespace {

TEST(ProcessStats, ParsesAStatLineWhoseCommandHoldsSpacesAndParentheses) {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    // cutime cstime priority nice threads itrealvalue starttime vsize rss ...
    const char* line =
        "4242 (vllm (router) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 12345 "
        "104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    const ProcessStats s = parse_proc_stat(line, 1'700'000'000, 100, 4096);
    EXPECT_DOUBLE_EQ(s.cpu_seconds, 3.0);                       // (250 + 50) ticks / 100
    EXPECT_DOUBLE_EQ(s.start_time, 1'700'000'000 + 123.45);     // boot + 12345 ticks
    EXPECT_DOUBLE_EQ(s.virtual_bytes, 104857600);
    EXPECT_DOUBLE_EQ(s.resident_bytes, 2560.0 * 4096);
}

TEST(ProcessStats, ACutLineGivesNothingRatherThanWrongFigures) {
    const ProcessStats s = parse_proc_stat("4242 (router) S 1 4242 4242 0 -1 4194560 1000 0", 1e9, 100, 4096);
    EXPECT_LT(s.cpu_seconds, 0);
    EXPECT_LT(s.resident_bytes, 0);
    EXPECT_LT(parse_proc_stat("garbage", 1e9, 100, 4096).start_time, 0);
}

TEST(ProcessStats, ReadsThisProcess) {
    const ProcessStats before = read_process_stats();
    EXPECT_GT(before.resident_bytes, 1e6);
    EXPECT_GT(before.start_time, 1.6e9);
    EXPECT_GT(before.max_fds, 0);
    const int fd = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(read_process_stats().open_fds, before.open_fds + 1);
    ::close(fd);
}

}  // namespace
}  // namespace vllm_router
