// fly-edge pure core: the fill lock (see cache_lock.hpp).
#include "cache_lock.hpp"

#include <cstdio>

namespace fly::core {

std::string lock_key(std::string_view key)
{
    std::string k(key);
    k.append("\x1f" "l");
    return k;
}

std::string lock_token(uint32_t pid, uint64_t random, int64_t now_ms)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%x.%llx.%llx", pid,
                     static_cast<unsigned long long>(random),
                     static_cast<unsigned long long>(now_ms < 0 ? 0 : now_ms));
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

uint64_t lock_poll_ms(uint64_t timeout_ms)
{
    uint64_t p = timeout_ms / 20;
    return p < 5 ? 5 : p > 25 ? 25 : p;
}

uint64_t lock_ttl_ms(uint64_t timeout_ms)
{
    if (timeout_ms == 0) {
        return 1;
    }
    return timeout_ms > UINT64_MAX / 2 ? UINT64_MAX : 2 * timeout_ms;
}

}  // namespace fly::core
