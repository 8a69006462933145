// What the operating system says of this process, for the standard Prometheus process_* series
// (the names and meanings client libraries use, so existing dashboards and alerts work).
// Linux only: read from /proc and getrlimit; a figure that cannot be read is left negative.
#pragma once

#include <string_view>

namespace vllm_router {

struct ProcessStats {
    double cpu_seconds = -1;       // user + system time of every thread
    double resident_bytes = -1;
    double virtual_bytes = -1;
    double open_fds = -1;
    double max_fds = -1;           // the soft RLIMIT_NOFILE
    double start_time = -1;        // seconds since the Unix epoch
};

ProcessStats read_process_stats();

// The fields of a /proc/<pid>/stat line and the btime of /proc/stat, parsed (exposed for tests:
// the command name in parentheses may hold spaces and parentheses itself).
ProcessStats parse_proc_stat(std::string_view stat_line, double boot_time, long ticks_per_second, long page_size);

}  // namespace vllm_router
