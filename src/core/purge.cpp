// fly-edge pure core: purge targets, JSON answers, same-origin URIs
// (purge.hpp).
#include "core/purge.hpp"

#include "core/cache_tags.hpp"
#include "core/http_text.hpp"
#include "core/url.hpp"

namespace fly::core {

namespace {

bool is_ctl_or_space(char ch)
{
    unsigned char c = static_cast<unsigned char>(ch);
    return c <= 0x20 || c == 0x7f;
}

// RFC 3986 5.2.4
std::string remove_dot_segments(std::string_view in)
{
    std::string out;
    while (!in.empty()) {
        if (in.substr(0, 3) == "../") {
            in.remove_prefix(3);
        } else if (in.substr(0, 2) == "./") {
            in.remove_prefix(2);
        } else if (in.substr(0, 3) == "/./") {
            in.remove_prefix(2);
        } else if (in == "/.") {
            in = "/";
        } else if (in.substr(0, 4) == "/../" || in == "/..") {
            in = in.size() == 3 ? std::string_view("/") : in.substr(3);
            size_t slash = out.rfind('/');
            out.erase(slash == std::string::npos ? 0 : slash);
        } else if (in == "." || in == "..") {
            in = {};
        } else {
            size_t next = in.find('/', in[0] == '/' ? 1 : 0);
            if (next == std::string_view::npos) {
                next = in.size();
            }
            out.append(in.substr(0, next));
            in.remove_prefix(next);
        }
    }
    return out;
}

bool starts_with_ci(std::string_view s, std::string_view prefix)
{
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

}  // namespace

PurgeTarget parse_purge_target(std::string_view path, std::string_view args)
{
    PurgeTarget t;
    bool any_tag = false;
    bool first = true;
    std::string value;
    size_t i = 0;
    while (i <= args.size() && !args.empty()) {
        size_t amp = args.find('&', i);
        if (amp == std::string_view::npos) {
            amp = args.size();
        }
        std::string_view arg = args.substr(i, amp - i);
        size_t eq = arg.find('=');
        std::string_view name = arg.substr(0, eq);
        std::string_view raw = eq == std::string_view::npos ? std::string_view()
                                                            : arg.substr(eq + 1);
        bool keep = true;
        if (name == "soft") {
            keep = false;
            t.args_changed = true;
            if (raw == "1") {
                t.soft = true;
            } else if (raw != "0") {
                t.error = "soft must be 1 or 0";
                return t;
            }
        } else if (name == "tag" && path == "/") {
            any_tag = true;
            // a query string: '+' is a space, which separates tags
            if (!percent_decode(raw, value, true)) {
                t.error = "bad percent-encoding in tag";
                return t;
            }
            std::string_view list[kMaxTags];
            size_t n = 0;
            if (!parse_tags(value, list, kMaxTags, n) || n == 0) {
                t.error = "tag must name one or more valid tags";
                return t;
            }
            for (size_t k = 0; k < n; k++) {
                bool seen = false;
                for (const std::string &have : t.tags) {
                    seen = seen || have == list[k];
                }
                if (seen) {
                    continue;
                }
                if (t.tags.size() == kMaxTags) {
                    t.error = "too many tags";
                    return t;
                }
                t.tags.emplace_back(list[k]);
            }
        }
        if (keep) {
            if (!first) {
                t.key_args += '&';
            }
            first = false;
            t.key_args.append(arg);
        }
        i = amp + 1;
    }
    t.tag_purge = any_tag;
    if (t.tag_purge) {
        t.key_args.clear();
    }
    t.ok = true;
    return t;
}

void json_string(std::string &out, std::string_view s)
{
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    for (char ch : s) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c < 0x20 || c >= 0x7f) {
            out.append("\\u00");
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += ch;
        }
    }
    out += '"';
}

std::string purge_json_url(std::string_view key, bool soft, uint64_t epoch)
{
    std::string j = "{\"purged\":\"url\",\"mode\":";
    j.append(soft ? "\"soft\"" : "\"hard\"");
    j.append(",\"key\":");
    json_string(j, key);
    if (soft) {
        j.append(",\"epoch\":").append(std::to_string(epoch));
    }
    j.append("}\n");
    return j;
}

std::string purge_json_tags(const std::vector<std::string> &tags, bool soft,
                            uint64_t epoch)
{
    std::string j = "{\"purged\":\"tags\",\"mode\":";
    j.append(soft ? "\"soft\"" : "\"hard\"");
    j.append(",\"tags\":[");
    for (size_t i = 0; i < tags.size(); i++) {
        if (i) {
            j += ',';
        }
        json_string(j, tags[i]);
    }
    j.append("],\"epoch\":").append(std::to_string(epoch)).append("}\n");
    return j;
}

std::string purge_json_error(std::string_view message)
{
    std::string j = "{\"error\":";
    json_string(j, message);
    j.append("}\n");
    return j;
}

bool same_origin_target(std::string_view ref, std::string_view host,
                        std::string_view request_path, std::string &out)
{
    out.clear();
    size_t hash = ref.find('#');
    if (hash != std::string_view::npos) {
        ref = ref.substr(0, hash);
    }
    if (ref.empty()) {
        return false;
    }
    for (char c : ref) {
        if (is_ctl_or_space(c)) {
            return false;
        }
    }

    std::string_view rest = ref;
    if (starts_with_ci(rest, "http://")) {
        rest.remove_prefix(5);
    } else if (starts_with_ci(rest, "https://")) {
        rest.remove_prefix(6);
    } else {
        // another scheme ("mailto:", "ftp://") is not this origin
        size_t colon = rest.find(':');
        size_t delim = rest.find_first_of("/?");
        if (colon != std::string_view::npos
            && (delim == std::string_view::npos || colon < delim))
        {
            return false;
        }
    }

    std::string path, query;
    if (rest.substr(0, 2) == "//") {
        rest.remove_prefix(2);
        size_t end = rest.find_first_of("/?");
        std::string_view authority = rest.substr(0, end);
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
        if (authority.find('@') != std::string_view::npos) {
            return false;
        }
        std::string_view h = authority;
        if (!h.empty() && h.front() == '[') {
            size_t close = h.find(']');
            if (close == std::string_view::npos) {
                return false;
            }
            h = h.substr(0, close + 1);
        } else {
            h = h.substr(0, h.find(':'));
        }
        if (h.empty() || !iequals(h, host)) {
            return false;
        }
        if (rest.empty() || rest.front() == '?') {
            path = "/";
        }
    } else if (rest.empty() || rest.front() != '/') {
        // a relative reference: merged with the request's path
        std::string_view base = request_path.empty() ? std::string_view("/")
                                                     : request_path;
        if (rest.empty() || rest.front() == '?') {
            path.assign(base);
        } else {
            size_t slash = base.rfind('/');
            path.assign(base.substr(0, slash == std::string_view::npos ? 0 : slash + 1));
            if (path.empty()) {
                path = "/";
            }
        }
    }

    size_t q = rest.find('?');
    path.append(rest.substr(0, q));
    if (q != std::string_view::npos) {
        query.assign(rest.substr(q));
    }
    out = remove_dot_segments(path);
    if (out.empty() || out.front() != '/') {
        out.insert(0, "/");
    }
    out.append(query);
    return true;
}

}  // namespace fly::core
