// fly-edge pure core: revalidation, the 304 header update, the stale
// window and the Redis retention of entries (freshness.hpp).
#include "core/freshness.hpp"
#include "core/cache_rules.hpp"
#include "core/http_text.hpp"

#include <algorithm>

namespace fly::core {

bool failure_cause(int status, bool generated, StaleCause &cause)
{
    if (generated) {
        if (status < 500 || status > 599) {
            return false;
        }
        cause = status == 504 ? StaleCause::timeout : StaleCause::error;
        return true;
    }
    switch (status) {
    case 500: cause = StaleCause::http_500; return true;
    case 502: cause = StaleCause::http_502; return true;
    case 503: cause = StaleCause::http_503; return true;
    case 504: cause = StaleCause::http_504; return true;
    default:  return false;
    }
}

int64_t stale_window(const EntryMeta &m, const StaleConfig &c, StaleCause cause)
{
    if (m.flags & kEntryNoStale) {
        return 0;
    }
    int64_t own = m.sie;             // RFC 5861 4: every cause here is one
    int64_t configured = 0;
    if ((c.use_stale & stale_bit(cause)) && !(m.flags & kEntrySharedMaxAge)) {
        configured = c.stale >= 0 ? c.stale
                                  : static_cast<int64_t>(std::max(m.sie, m.swr));
    }
    return std::max(own, configured);
}

bool may_serve_stale(const EntryMeta &m, const StaleConfig &c,
                     StaleCause cause, int64_t now)
{
    int64_t end = m.stored + static_cast<int64_t>(m.ttl);
    int64_t past = now > end ? now - end : 0;
    return past < stale_window(m, c, cause);
}

int64_t updating_window(const EntryMeta &m, const StaleConfig &c)
{
    if (m.flags & kEntryNoStale) {
        return 0;
    }
    int64_t own = m.swr;
    int64_t configured = 0;
    if ((c.use_stale & kUseStaleUpdating) && !(m.flags & kEntrySharedMaxAge)) {
        configured = c.stale >= 0 ? c.stale : static_cast<int64_t>(m.swr);
    }
    return std::max(own, configured);
}

bool may_serve_updating(const EntryMeta &m, const StaleConfig &c, int64_t now)
{
    int64_t end = m.stored + static_cast<int64_t>(m.ttl);
    int64_t past = now > end ? now - end : 0;
    return past < updating_window(m, c);
}

bool must_answer_504(const EntryMeta &m, StaleCause cause)
{
    return (m.flags & kEntryMustRevalidate)
           && (cause == StaleCause::error || cause == StaleCause::timeout);
}

int64_t keep_seconds(const EntryMeta &m, const StaleConfig &c, bool validators)
{
    // An entry that may not be served stale is kept as long too: within
    // that window a must-revalidate one answers the 504 of RFC 9111
    // 5.2.2.2 when the app cannot be reached.
    int64_t extra = std::max<int64_t>(m.sie, m.swr);
    if (c.use_stale != 0 && c.stale > extra && !(m.flags & kEntrySharedMaxAge)) {
        extra = c.stale;
    }
    if (c.revalidate && validators) {
        int64_t keep = std::clamp<int64_t>(m.ttl, kRevalidateKeepMin,
                                           kRevalidateKeepMax);
        extra = std::max(extra, keep);
    }
    int64_t total = static_cast<int64_t>(m.ttl) + extra;
    return total > 0 ? total : 1;
}

bool should_revalidate(bool enabled, bool get, bool client_conditional,
                       std::string_view etag, std::string_view last_modified)
{
    return enabled && get && !client_conditional
           && (!etag.empty() || !last_modified.empty());
}

void entry_validators(const EntryView &e, std::string_view &etag,
                      std::string_view &last_modified)
{
    etag = {};
    last_modified = {};
    for (size_t i = 0; i < e.nheaders; i++) {
        if (etag.empty() && iequals(e.headers[i].name, "ETag")) {
            etag = e.headers[i].value;
        } else if (last_modified.empty()
                   && iequals(e.headers[i].name, "Last-Modified"))
        {
            last_modified = e.headers[i].value;
        }
    }
}

bool kept_from_304(std::string_view name, std::string_view connection)
{
    static constexpr std::string_view kFraming[] = {
        "content-length", "content-range", "content-encoding",
        "transfer-encoding", "age",
    };
    for (std::string_view h : kFraming) {
        if (iequals(name, h)) {
            return false;
        }
    }
    return !is_hop_by_hop(name, connection);
}

bool merge_304(const EntryHeader *stored, size_t nstored,
               const EntryHeader *fresh, size_t nfresh,
               std::string_view connection, EntryHeader *out, size_t max,
               size_t &n)
{
    n = 0;
    auto in_fresh = [&](std::string_view name) {
        for (size_t j = 0; j < nfresh; j++) {
            if (iequals(fresh[j].name, name) && kept_from_304(name, connection)) {
                return true;
            }
        }
        return false;
    };
    auto push = [&](const EntryHeader &h) {
        if (n == max) {
            return false;
        }
        out[n++] = h;
        return true;
    };
    auto push_fresh_lines = [&](std::string_view name) {
        for (size_t j = 0; j < nfresh; j++) {
            if (iequals(fresh[j].name, name) && !push(fresh[j])) {
                return false;
            }
        }
        return true;
    };
    for (size_t i = 0; i < nstored; i++) {
        std::string_view name = stored[i].name;
        if (!in_fresh(name)) {
            if (!push(stored[i])) {
                return false;
            }
            continue;
        }
        bool first = true;
        for (size_t k = 0; k < i; k++) {
            if (iequals(stored[k].name, name)) {
                first = false;
                break;
            }
        }
        if (first && !push_fresh_lines(name)) {
            return false;
        }
    }
    for (size_t j = 0; j < nfresh; j++) {
        std::string_view name = fresh[j].name;
        if (!kept_from_304(name, connection)) {
            continue;
        }
        bool seen = false;
        for (size_t i = 0; i < nstored && !seen; i++) {
            seen = iequals(stored[i].name, name);
        }
        for (size_t k = 0; k < j && !seen; k++) {
            seen = iequals(fresh[k].name, name);
        }
        if (!seen && !push_fresh_lines(name)) {
            return false;
        }
    }
    return true;
}

}  // namespace fly::core
