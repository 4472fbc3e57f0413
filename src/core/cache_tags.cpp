// fly-edge pure core: cache tags and the tag epoch (cache_tags.hpp).
#include "core/cache_tags.hpp"

#include "core/cache_rules.hpp"
#include "core/http_text.hpp"

namespace fly::core {

namespace {

bool tag_char(char ch)
{
    unsigned char c = static_cast<unsigned char>(ch);
    return c >= 0x21 && c <= 0x7e && c != ',';
}

bool separator(char c) { return c == ',' || c == ' ' || c == '\t'; }

// 1..20 decimal digits fitting 64 bits.
bool parse_u64(std::string_view s, uint64_t &out)
{
    out = 0;
    if (s.empty() || s.size() > 20) {
        return false;
    }
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
        uint64_t d = static_cast<uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    out = v;
    return true;
}

}  // namespace

bool valid_tag(std::string_view tag)
{
    return tag.size() <= kMaxTagLen && all_chars(tag, tag_char);
}

bool parse_tags(std::string_view list, std::string_view out[], size_t max,
                size_t &n)
{
    n = 0;
    size_t bytes = 0;
    size_t i = 0;
    while (i < list.size()) {
        if (separator(list[i])) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < list.size() && !separator(list[i])) {
            i++;
        }
        std::string_view tag = list.substr(start, i - start);
        if (!valid_tag(tag)) {
            return false;
        }
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++) {
            seen = out[k] == tag;
        }
        if (seen) {
            continue;
        }
        bytes += tag.size();
        if (n == max || bytes > kMaxTagBytes) {
            return false;
        }
        out[n++] = tag;
    }
    return true;
}

bool parse_epoch(std::string_view value, uint64_t &out)
{
    return parse_u64(value, out);
}

std::string tag_record_key(std::string_view tag)
{
    std::string k;
    k.reserve(kTagKeyPrefix.size() + tag.size());
    k.append(kTagKeyPrefix).append(tag);
    return k;
}

std::string implicit_tag(std::string_view base_key)
{
    if (base_key.substr(0, kKeyPrefix.size()) == kKeyPrefix) {
        base_key.remove_prefix(kKeyPrefix.size());
    }
    std::string t("\x1fu");
    t.append(base_key);
    return t;
}

bool parse_tag_record(std::string_view value, uint64_t &hard, uint64_t &soft)
{
    size_t colon = value.find(':');
    if (colon == std::string_view::npos) {
        hard = soft = 0;
        return false;
    }
    bool ok = parse_u64(value.substr(0, colon), hard)
              && parse_u64(value.substr(colon + 1), soft);
    if (!ok) {
        hard = soft = 0;
    }
    return ok;
}

TagVerdict tag_verdict(uint64_t entry_epoch, const TagRecord *records,
                       size_t n, bool &malformed)
{
    TagVerdict v = TagVerdict::valid;
    malformed = false;
    for (size_t i = 0; i < n; i++) {
        if (!records[i].present) {
            continue;
        }
        uint64_t hard = 0, soft = 0;
        if (!parse_tag_record(records[i].value, hard, soft)) {
            malformed = true;
            return TagVerdict::purged;
        }
        if (hard > entry_epoch) {
            return TagVerdict::purged;
        }
        if (soft > entry_epoch) {
            v = TagVerdict::stale;
        }
    }
    return v;
}

}  // namespace fly::core
