// fly-edge pure core: what a purge request asks for, the JSON answer, and
// the same-origin URIs a write invalidates (RFC 9111 4.4).  No nginx
// header here: this file is unit-tested with cmocka.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fly::core {

// A purge request's target: `path` and `args` of its request URI (for
// `PURGE http://host/p?a HTTP/1.1`, "/p" and "a", as nginx splits it).
//   - `soft=1` (or `soft=0`) in the arguments asks for a soft purge; the
//     argument is removed from the URI whose key is purged (`key_args`);
//   - path "/" with one or more `tag=` arguments is a tag purge: each
//     value, percent-decoded, is a tag list as in a tags header;
//   - anything else purges the URL `path` + `?key_args`.
struct PurgeTarget {
    bool ok = false;
    std::string error;           // when !ok: for the 400 answer
    bool soft = false;           // soft=1
    bool tag_purge = false;
    std::vector<std::string> tags;   // tag purge: valid, distinct, <= kMaxTags
    std::string key_args;        // URL purge: the arguments but soft=
    bool args_changed = false;   // key_args differs from args
};

PurgeTarget parse_purge_target(std::string_view path, std::string_view args);

// The JSON answers of a purge (one line each, with a final newline).
// `key` is the configured key (without the "fly:" prefix); `epoch` is the
// tag epoch a tag or soft purge made (0 for a hard URL purge, not shown).
std::string purge_json_url(std::string_view key, bool soft, uint64_t epoch);
std::string purge_json_tags(const std::vector<std::string> &tags, bool soft,
                            uint64_t epoch);
std::string purge_json_error(std::string_view message);

// Appends `s` as a JSON string (quotes included); bytes that are not
// printable ASCII are written \u00XX (keys and hosts are bytes, not text).
void json_string(std::string &out, std::string_view s);

// RFC 9111 4.4: the URI a Location or Content-Location value `ref` names,
// when it is on this request's host: an absolute URI (http or https: TLS is
// often ended in front of nginx) or a network-path reference whose host is
// `host` (case-insensitive; ports are not compared, as the default key does
// not hold one), an absolute path, or a relative reference resolved
// against `request_path` (RFC 3986 5.2, dot segments removed).  The
// fragment is dropped.  `out` is path[?query].  False when the reference
// names another host, another scheme, holds white space or control
// bytes, or is empty.
bool same_origin_target(std::string_view ref, std::string_view host,
                        std::string_view request_path, std::string &out);

}  // namespace fly::core
