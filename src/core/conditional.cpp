// fly-edge pure core: conditional requests answered from a stored response
// (RFC 9110 section 13, RFC 9111 4.3.2).
#include "core/http_text.hpp"
#include "core/cache_control.hpp"
#include "core/conditional.hpp"

namespace fly::core {

namespace {

// A Last-Modified is strong enough for If-Range when the cache entry's
// Date is at least this much later (RFC 9110 8.8.2.2).
constexpr int64_t kStrongLastModified = 60;

// etagc = %x21 / %x23-7E / obs-text
constexpr bool is_etagc(char ch)
{
    unsigned char c = static_cast<unsigned char>(ch);
    return c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80;
}

// Reads one entity tag at s[i]; on success i is just past it.
bool read_tag(std::string_view s, size_t &i, EntityTag &out)
{
    out.weak = false;
    if (s.size() - i >= 2 && s[i] == 'W' && s[i + 1] == '/') {
        out.weak = true;
        i += 2;
    }
    if (i >= s.size() || s[i] != '"') {
        return false;
    }
    size_t start = ++i;
    while (i < s.size() && is_etagc(s[i])) {
        i++;
    }
    if (i >= s.size() || s[i] != '"') {
        return false;
    }
    out.opaque = s.substr(start, i - start);
    i++;
    return true;
}

// True when the stored status is one a precondition can apply to.
bool successful(int status)
{
    return status >= 200 && status <= 299;
}

// The result of a date precondition; nullopt when the value is not a
// valid HTTP-date (the precondition is then ignored).
std::optional<int64_t> date_of(std::string_view v)
{
    int64_t t = 0;
    if (!parse_http_date(v, t)) {
        return std::nullopt;
    }
    return t;
}

// The stored validators, parsed: only those the request's preconditions
// compare with.
struct Parsed {
    std::optional<EntityTag> etag;
    std::optional<int64_t> last_modified;
    std::optional<int64_t> date;
    int64_t stored = 0;

    Parsed(const Preconditions &req, const StoredValidators &s) : stored(s.stored)
    {
        bool if_range = req.range && req.if_range;
        EntityTag tag;
        if (s.etag && (req.if_match || req.if_none_match || if_range)
            && parse_entity_tag(*s.etag, tag))
        {
            etag = tag;
        }
        if (req.if_modified_since || req.if_unmodified_since || if_range) {
            if (s.last_modified) {
                last_modified = date_of(*s.last_modified);
            }
            if (s.date) {
                date = date_of(*s.date);
            }
        }
    }
};

// RFC 9110 13.1.5: whether If-Range holds.
bool if_range_holds(std::string_view v, const Parsed &s)
{
    v = trim_ows(v);
    if (v.substr(0, 1) == "\"" || v.substr(0, 2) == "W/") {
        EntityTag tag;
        return parse_entity_tag(v, tag) && s.etag
               && strong_match(tag, *s.etag);
    }
    std::optional<int64_t> t = date_of(v);
    return t && s.last_modified && *t == *s.last_modified && s.date
           && *s.date - *s.last_modified >= kStrongLastModified;
}

}  // namespace

bool parse_entity_tag(std::string_view v, EntityTag &out)
{
    v = trim_ows(v);
    size_t i = 0;
    return read_tag(v, i, out) && i == v.size();
}

bool strong_match(const EntityTag &a, const EntityTag &b)
{
    return !a.weak && !b.weak && a.opaque == b.opaque;
}

bool weak_match(const EntityTag &a, const EntityTag &b)
{
    return a.opaque == b.opaque;
}

TagListMatch match_tag_list(std::string_view list, const EntityTag *stored,
                            bool weak)
{
    if (trim_ows(list) == "*") {
        return TagListMatch::match;
    }
    bool matched = false;
    size_t i = 0;
    while (true) {
        // empty list elements are allowed (RFC 9110 5.6.1)
        while (i < list.size() && (is_ows(list[i]) || list[i] == ',')) {
            i++;
        }
        if (i == list.size()) {
            return matched ? TagListMatch::match : TagListMatch::no_match;
        }
        EntityTag tag;
        if (!read_tag(list, i, tag)) {
            return TagListMatch::malformed;
        }
        while (i < list.size() && is_ows(list[i])) {
            i++;
        }
        if (i < list.size() && list[i] != ',') {
            return TagListMatch::malformed;
        }
        // the whole list is checked, so a malformed tail is never missed
        if (stored != nullptr
            && (weak ? weak_match(tag, *stored) : strong_match(tag, *stored)))
        {
            matched = true;
        }
    }
}

CondDecision evaluate_conditions(const Preconditions &req,
                                 const StoredValidators &stored)
{
    CondDecision d;
    if (!successful(stored.status)) {
        d.use_range = req.get && req.range;
        return d;
    }
    const Parsed s(req, stored);
    auto ignore = [&](std::string_view name) {
        if (d.ignored.empty()) {
            d.ignored = name;
        }
    };
    const EntityTag *etag = s.etag ? &*s.etag : nullptr;

    // Step 1: If-Match, strong comparison; else step 2: If-Unmodified-Since.
    bool if_match_used = false;
    if (req.if_match) {
        switch (match_tag_list(*req.if_match, etag, false)) {
        case TagListMatch::match:
            if_match_used = true;
            break;
        case TagListMatch::no_match:
            d.outcome = CondOutcome::precondition_failed;
            return d;
        case TagListMatch::malformed:
            ignore("If-Match");
            break;
        }
    }
    if (!if_match_used && req.if_unmodified_since && s.last_modified) {
        std::optional<int64_t> t = date_of(*req.if_unmodified_since);
        if (t && *s.last_modified > *t) {
            d.outcome = CondOutcome::precondition_failed;
            return d;
        }
    }

    // Step 3: If-None-Match, weak comparison; else step 4:
    // If-Modified-Since for GET and HEAD.
    bool if_none_match_used = false;
    if (req.if_none_match) {
        switch (match_tag_list(*req.if_none_match, etag, true)) {
        case TagListMatch::match:
            d.outcome = req.get || req.head ? CondOutcome::not_modified
                                            : CondOutcome::precondition_failed;
            return d;
        case TagListMatch::no_match:
            if_none_match_used = true;
            break;
        case TagListMatch::malformed:
            ignore("If-None-Match");
            break;
        }
    }
    if (!if_none_match_used && req.if_modified_since && (req.get || req.head)) {
        std::optional<int64_t> t = date_of(*req.if_modified_since);
        int64_t modified = s.last_modified ? *s.last_modified
                           : s.date        ? *s.date
                                           : s.stored;
        if (t && modified <= *t) {
            d.outcome = CondOutcome::not_modified;
            return d;
        }
    }

    // Step 5: Range applies to GET only, and then only if If-Range holds.
    d.use_range = req.get && req.range
                  && (!req.if_range || if_range_holds(*req.if_range, s));
    return d;
}

}  // namespace fly::core
