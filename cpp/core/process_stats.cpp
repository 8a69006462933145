#include "core/process_stats.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

namespace vllm_router {
namespace {

std::string read_file(const char* path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

double boot_time() {
    const std::string stat = read_file("/proc/stat");
    const auto at = stat.find("\nbtime ");
    if (at == std::string::npos) return -1;
    double v = -1;
    const char* begin = stat.data() + at + 7;
    std::from_chars(begin, stat.data() + stat.size(), v);
    return v;
}

double count_open_fds() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return -1;
    double n = 0;
    while (const dirent* e = ::readdir(dir))
        if (e->d_name[0] != '.') ++n;
    ::closedir(dir);
    return n - 1;  // the descriptor opendir() itself holds
}

}  // namespace

ProcessStats parse_proc_stat(std::string_view line, double boot, long ticks, long page) {
    ProcessStats out;
    // "pid (comm) state ppid ...": the fields that follow the last ')' are numbered from 3.
    const auto close = line.rfind(')');
    if (close == std::string_view::npos || ticks <= 0) return out;
    std::string_view rest = line.substr(close + 1);
    double fields[25] = {};
    int field = 2;
    while (!rest.empty() && field < 24) {
        const auto start = rest.find_first_not_of(' ');
        if (start == std::string_view::npos) break;
        rest.remove_prefix(start);
        const auto end = std::min(rest.find(' '), rest.size());
        ++field;
        std::from_chars(rest.data(), rest.data() + end, fields[field]);
        rest.remove_prefix(end);
    }
    if (field < 24) return out;  // cut short: trust none of it
    out.cpu_seconds = (fields[14] + fields[15]) / static_cast<double>(ticks);
    if (boot >= 0) out.start_time = boot + fields[22] / static_cast<double>(ticks);
    out.virtual_bytes = fields[23];
    out.resident_bytes = fields[24] * static_cast<double>(page);
    return out;
}

ProcessStats read_process_stats() {
    ProcessStats out = parse_proc_stat(read_file("/proc/self/stat"), boot_time(), ::sysconf(_SC_CLK_TCK),
                                       ::sysconf(_SC_PAGESIZE));
    out.open_fds = count_open_fds();
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
        out.max_fds = static_cast<double>(limit.rlim_cur);
    return out;
}

}  // namespace vllm_router
