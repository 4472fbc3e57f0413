// fly-edge pure core: what a shared cache may store, and for how long
// (RFC 9111 sections 3 and 4.2), plus the cache key and its Vary variants.
#include "core/http_text.hpp"
#include "core/cache_rules.hpp"
#include "core/cache_entry.hpp"

#include <climits>

namespace fly::core {

namespace {

// The largest lifetime we keep: delta-seconds saturate at 2^31 (RFC 9111
// 1.2.2) and the entry stores the TTL in 32 bits.
constexpr int64_t kTtlMax = int64_t{1} << 31;

constexpr char kVarySep = '\x1f';

int64_t sat_sub(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r)) {
        return b < 0 ? INT64_MAX : INT64_MIN;
    }
    return r;
}

// Final statuses only; never 206 (we do not combine partial content),
// 304 (it updates a stored response, it is not one: RFC 9111 4.3.4) nor
// 412 (a precondition of that one request failed: RFC 9110 15.5.13).
// Statuses beyond 599 are not HTTP's and are not stored.
bool cacheable_status(int status)
{
    return status >= 200 && status <= 599 && status != 206 && status != 304
           && status != 412;
}

// RFC 9111 3.5: a shared cache stores a response to a request with
// Authorization only when the response explicitly allows it.
bool shareable_with_authorization(const CacheControl &cc)
{
    return cc.is_public || cc.s_maxage >= 0 || cc.must_revalidate;
}

// The explicit freshness lifetime (RFC 9111 4.2.1): s-maxage (shared
// caches only) over max-age over Expires minus Date.  Without Date the
// receipt time stands in for it (RFC 9110 6.6.1).  An invalid Expires
// means "already expired" (RFC 9111 5.3); with a targeted field in use
// Expires does not count (RFC 9213 2.1).  False when the response gives
// no explicit freshness at all.
bool explicit_lifetime(const ResponseFacts &f, int64_t &lifetime)
{
    if (f.cc.s_maxage >= 0) {
        lifetime = f.cc.s_maxage;
    } else if (f.cc.max_age >= 0) {
        lifetime = f.cc.max_age;
    } else if (f.has_expires && !f.targeted) {
        lifetime = f.expires_valid
                       ? sat_sub(f.expires, f.has_date ? f.date : f.now)
                       : 0;
    } else {
        return false;
    }
    return true;
}

// fly_cache_valid: a rule naming the status beats an "any" rule whatever
// their order; among equals the first one wins.
const ValidRule *find_valid_rule(const CachePolicy &p, int status)
{
    const ValidRule *any = nullptr;
    for (size_t i = 0; i < p.nvalid; i++) {
        if (p.valid[i].status == status) {
            return &p.valid[i];
        }
        if (p.valid[i].status == 0 && any == nullptr) {
            any = &p.valid[i];
        }
    }
    return any;
}

// fly_cache_min_ttl raises a positive lifetime only: a response that is
// already stale (max-age=0, an Expires in the past, an Age beyond its
// lifetime) stays stale, since RFC 9111 4.2.4 forbids serving it without
// revalidation.  fly_cache_max_ttl is applied last: it is a hard ceiling,
// even over min_ttl.
int64_t clamp_ttl(int64_t ttl, const CachePolicy &p)
{
    if (ttl <= 0) {
        return ttl;
    }
    if (p.min_ttl > 0 && ttl < p.min_ttl) {
        ttl = p.min_ttl;
    }
    if (p.max_ttl > 0 && ttl > p.max_ttl) {
        ttl = p.max_ttl;
    }
    return ttl < kTtlMax ? ttl : kTtlMax;
}

StoreDecision verdict(StoreVerdict v)
{
    StoreDecision d;
    d.verdict = v;
    return d;
}

// Why the response must not be stored, if it must not (RFC 9111 3).
bool refusal(const ResponseFacts &f, const CachePolicy &p, StoreVerdict &why)
{
    const CacheControl &cc = f.cc;
    if (!cacheable_status(f.status)) {
        why = StoreVerdict::status;
    } else if (f.request_conditional && f.status != 200) {
        // proxy_cache removes the preconditions from the request it sends,
        // so it always gets the full answer; we see the origin's answer to
        // them, and only a 200 is the one an unconditional request gets.
        why = StoreVerdict::conditional;
    } else if (cc.no_store) {                       // RFC 9111 5.2.2.5
        why = StoreVerdict::no_store;
    } else if (cc.is_private) {                     // RFC 9111 5.2.2.7
        why = StoreVerdict::is_private;
    } else if (cc.no_cache && !(p.revalidate && f.has_validator)) {
        why = StoreVerdict::no_cache;               // RFC 9111 5.2.2.4
    } else if (f.vary_star) {                       // RFC 9111 4.1
        why = StoreVerdict::vary_star;
    } else if (f.request_range) {
        why = StoreVerdict::range;
    } else if (f.request_authorization && !shareable_with_authorization(cc)) {
        why = StoreVerdict::authorization;
    } else if (f.has_fly_replay) {
        why = StoreVerdict::fly_replay;
    } else if (f.request_forwarded) {
        why = StoreVerdict::forwarded;
    } else if (f.request_body) {
        why = StoreVerdict::request_body;
    } else if (f.has_set_cookie && !p.ignore_set_cookie) {
        why = StoreVerdict::set_cookie;
    } else if (cc.invalid) {
        // RFC 9111 4.2.1: a cache is encouraged to consider a response
        // with invalid freshness information stale.
        why = StoreVerdict::invalid;
    } else if (f.age_invalid) {
        // RFC 9111 5.1 would ignore such an Age; it comes from a cache on
        // the way that we cannot read, so the response may have been held
        // there for any time: treated as stale, like invalid freshness
        // information above, rather than as fresh from now.
        why = StoreVerdict::invalid_age;
    } else {
        return false;
    }
    return true;
}

// Is `name` one of `set` (lower case), case-insensitively?
template <size_t N>
bool one_of(std::string_view name, const std::string_view (&set)[N])
{
    for (std::string_view s : set) {
        if (iequals(name, s)) {
            return true;
        }
    }
    return false;
}

// Does an element of the comma list `list` name `name` (a header name,
// case-insensitively)?
bool list_names(std::string_view list, std::string_view name)
{
    // keep looking while the element does not name it
    return !for_each_element(list, [&](std::string_view e) {
        return !iequals(e, name);
    });
}

void append_escaped(std::string &key, char ch)
{
    static constexpr char kHex[] = "0123456789ABCDEF";
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '%' || c < 0x20 || c == 0x7f) {
        key += '%';
        key += kHex[c >> 4];
        key += kHex[c & 0xf];
    } else {
        key += ch;
    }
}

}  // namespace

StoreDecision decide_store(const ResponseFacts &f, const CachePolicy &p)
{
    StoreVerdict why;
    if (refusal(f, p, why)) {
        return verdict(why);
    }

    bool revalidatable = p.revalidate && f.has_validator;
    int64_t lifetime = 0;
    if (!explicit_lifetime(f, lifetime)) {
        const ValidRule *rule = find_valid_rule(p, f.status);
        if (rule != nullptr) {
            lifetime = rule->ttl;
        } else if (!(f.cc.no_cache && revalidatable)) {
            return verdict(StoreVerdict::no_freshness);
        }
    }

    // RFC 9111 4.2: fresh while the lifetime exceeds the current age; the
    // origin's Age is the part of it spent before us.
    int64_t ttl = clamp_ttl(sat_sub(lifetime, f.age > 0 ? f.age : 0), p);
    if (f.cc.no_cache) {
        ttl = 0;                                    // revalidated every time
    }
    if (ttl <= 0 && !revalidatable) {
        return verdict(StoreVerdict::expired);
    }

    StoreDecision d = verdict(StoreVerdict::store);
    d.ttl = ttl > 0 ? ttl : 0;
    // RFC 9111 4.2.4: no stale use where the response forbids it.
    if (f.cc.must_revalidate || f.cc.proxy_revalidate) {
        d.stale_flags |= kEntryNoStale | kEntryMustRevalidate;
    }
    if (f.cc.no_cache) {
        d.stale_flags |= kEntryNoStale;
    }
    if (f.cc.s_maxage >= 0) {
        d.stale_flags |= kEntrySharedMaxAge;
    }
    // RFC 5861 extensions, kept for later.  must-revalidate and
    // proxy-revalidate forbid any stale use (RFC 9111 4.2.4, 5.2.2.2,
    // 5.2.2.8), so they cancel both.  s-maxage alone does not: a response
    // that states stale-while-revalidate next to s-maxage asks for it.
    if (!f.cc.must_revalidate && !f.cc.proxy_revalidate) {
        d.stale_while_revalidate =
            f.cc.stale_while_revalidate > 0 ? f.cc.stale_while_revalidate : 0;
        d.stale_if_error = f.cc.stale_if_error > 0 ? f.cc.stale_if_error : 0;
    }
    return d;
}

bool store_refused(const ResponseFacts &f, const CachePolicy &p,
                   StoreVerdict &why)
{
    return refusal(f, p, why);
}

std::string_view verdict_name(StoreVerdict v)
{
    switch (v) {
    case StoreVerdict::store:         return "store";
    case StoreVerdict::no_store:      return "no-store";
    case StoreVerdict::is_private:    return "private";
    case StoreVerdict::no_cache:      return "no-cache";
    case StoreVerdict::authorization: return "authorization";
    case StoreVerdict::set_cookie:    return "set-cookie";
    case StoreVerdict::vary_star:     return "vary-star";
    case StoreVerdict::status:        return "status";
    case StoreVerdict::no_freshness:  return "no-freshness";
    case StoreVerdict::expired:       return "expired";
    case StoreVerdict::range:         return "range";
    case StoreVerdict::invalid:       return "invalid-cache-control";
    case StoreVerdict::conditional:   return "conditional";
    case StoreVerdict::invalid_age:   return "invalid-age";
    case StoreVerdict::forwarded:     return "forwarded-header";
    case StoreVerdict::request_body:  return "request-body";
    case StoreVerdict::fly_replay:    return "fly-replay";
    }
    return "unknown";
}

ContentType split_content_type(std::string_view v)
{
    ContentType ct;
    ct.type_len = v.size();
    // As nginx does: at each ';', skip spaces; a "charset=" there ends
    // the type (case-insensitive), anything else is passed over.
    for (size_t i = 0; i < v.size(); i++) {
        if (v[i] != ';') {
            continue;
        }
        size_t semi = i;
        size_t p = i + 1;
        while (p < v.size() && v[p] == ' ') {
            p++;
        }
        constexpr std::string_view kCharset = "charset=";
        if (!iequals(v.substr(p, kCharset.size()), kCharset)) {
            i = p;      // nginx steps over the character after the spaces
            continue;
        }
        p += kCharset.size();
        size_t end = v.size();
        if (p < end && v[p] == '"') {
            p++;
        }
        if (end > p && v[end - 1] == '"') {
            end--;
        }
        ct.type_len = semi;
        ct.charset = v.substr(p, end - p);
        return ct;
    }
    return ct;
}

bool is_hop_by_hop(std::string_view name, std::string_view connection)
{
    // RFC 9110 7.6.1, plus Keep-Alive and Proxy-Connection which predate it
    static constexpr std::string_view kFixed[] = {
        "connection", "keep-alive", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
    };
    return one_of(name, kFixed) || list_names(connection, name);
}

bool unkeyed_forwarding(std::string_view name, std::string_view vary)
{
    static constexpr std::string_view kNames[] = {
        "x-forwarded-host", "x-forwarded-server", "x-forwarded-prefix",
        "x-forwarded-uri", "x-forwarded-scheme", "x-forwarded-ssl",
        "forwarded", "x-host", "x-original-host", "x-http-host-override",
        "x-original-url", "x-original-uri", "x-rewrite-url",
        "front-end-https", "x-http-method-override", "x-http-method",
        "x-method-override",
    };
    return one_of(name, kNames) && !list_names(vary, name);
}

bool build_key(std::initializer_list<std::string_view> parts, std::string &out)
{
    size_t n = 0;
    for (std::string_view p : parts) {
        if (p.find(kVarySep) != std::string_view::npos) {
            return false;
        }
        n += p.size();
    }
    if (n == 0 || n > kMaxKeyLen - kKeyPrefix.size()) {
        return false;
    }
    out.reserve(kKeyPrefix.size() + n);
    out.assign(kKeyPrefix);
    for (std::string_view p : parts) {
        out.append(p);
    }
    return true;
}

bool build_key(std::string_view configured, std::string &out)
{
    return build_key({configured}, out);
}

bool vary_names(std::string_view vary, std::string names[], size_t max, size_t &n)
{
    n = 0;
    return for_each_element(vary, [&](std::string_view e) {
        if (e == "*") {                         // RFC 9110 12.5.5
            return false;
        }
        for (char c : e) {
            if (!is_tchar(c)) {
                return false;
            }
        }
        std::string name(e.size(), '\0');
        for (size_t i = 0; i < e.size(); i++) {
            name[i] = ascii_lower(e[i]);
        }
        // insertion into the sorted, duplicate-free array
        size_t pos = 0;
        while (pos < n && names[pos] < name) {
            pos++;
        }
        if (pos < n && names[pos] == name) {
            return true;
        }
        if (n == max) {
            return false;
        }
        for (size_t i = n; i > pos; i--) {
            names[i] = std::move(names[i - 1]);
        }
        names[pos] = std::move(name);
        n++;
        return true;
    });
}

void append_vary_part(std::string &key, std::string_view name, std::string_view value)
{
    key += kVarySep;
    for (char c : name) {
        key += ascii_lower(c);
    }
    key += '=';
    bool first = true;
    for_each_element(value, [&](std::string_view e) {
        if (!first) {
            key += ',';
        }
        first = false;
        for (char c : e) {
            append_escaped(key, c);
        }
        return true;
    });
}

}  // namespace fly::core
