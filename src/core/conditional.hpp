// fly-edge pure core: conditional requests answered from a stored response
// (RFC 9110 section 13, RFC 9111 4.3.2) and the entity tags they compare.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace fly::core {

// entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE  (RFC 9110 8.8.3)
struct EntityTag {
    std::string_view opaque;     // between the quotes
    bool weak = false;
};

// Parses `v` (surrounding white space allowed) as exactly one entity tag.
// "W/" is case-sensitive; etagc is %x21 / %x23-7E / obs-text.  False when
// it is anything else (an unquoted tag, a stray byte, a list).
bool parse_entity_tag(std::string_view v, EntityTag &out);

// RFC 9110 8.8.3.2: strong comparison needs both tags strong; weak
// comparison looks at the opaque tags only.
bool strong_match(const EntityTag &a, const EntityTag &b);
bool weak_match(const EntityTag &a, const EntityTag &b);

enum class TagListMatch : uint8_t { match, no_match, malformed };

// An If-Match / If-None-Match value: "*" (matches whenever a stored
// response exists, i.e. always here) or a comma list of entity tags
// (white space and empty elements allowed, a comma inside a tag is part
// of it).  `stored` is the stored response's ETag, nullptr when it has
// none.  `weak` picks the comparison.  An empty list is valid and matches
// nothing; one malformed element makes the whole value malformed.
TagListMatch match_tag_list(std::string_view list, const EntityTag *stored,
                            bool weak);

// What the stored response offers to compare with: its header values as
// stored (absent = nullopt), parsed only when a precondition needs them;
// one that does not parse counts as absent.
struct StoredValidators {
    std::optional<std::string_view> etag;
    std::optional<std::string_view> last_modified;
    std::optional<std::string_view> date;
    int64_t stored = 0;                     // when the cache received it
    int status = 200;
};

// The request's preconditions, as received (absent = nullopt).  nginx
// refuses a request with two lines of any of them, so each is one value.
struct Preconditions {
    std::optional<std::string_view> if_match;
    std::optional<std::string_view> if_none_match;
    std::optional<std::string_view> if_modified_since;
    std::optional<std::string_view> if_unmodified_since;
    std::optional<std::string_view> if_range;
    bool range = false;          // the request has a Range header
    bool get = false;            // the method is GET
    bool head = false;           // the method is HEAD
};

enum class CondOutcome : uint8_t {
    full,                        // send the stored response
    not_modified,                // 304
    precondition_failed,         // 412
};

struct CondDecision {
    CondOutcome outcome = CondOutcome::full;
    // With `full`: the request's Range applies (a GET whose If-Range, if
    // any, holds).  False means the Range header must be ignored and the
    // whole response sent (RFC 9110 13.1.5, 14.2).
    bool use_range = false;
    // The first precondition that was malformed and so ignored, as if
    // absent ("If-None-Match", ...), for a log line; empty when none.
    std::string_view ignored;
};

// RFC 9110 13.2.2, in its order: If-Match (strong), else
// If-Unmodified-Since; then If-None-Match (weak), else If-Modified-Since
// (GET and HEAD only); then If-Range with Range (GET only).  Preconditions
// are ignored when the stored status is not 2xx (13.2.1).
//   - If-Modified-Since compares with Last-Modified, else the stored Date,
//     else the time the cache received the response (RFC 9111 4.3.2);
//     a date later than or equal to it gives 304.
//   - If-Unmodified-Since needs a Last-Modified (13.1.4: ignored without
//     one); a Last-Modified later than it gives 412.
//   - A value that is not a valid HTTP-date is ignored (13.1.3, 13.1.4);
//     a malformed entity-tag list is ignored too (and named in `ignored`).
//   - If-Range holds for a strong ETag that matches strongly, or for an
//     HTTP-date equal to a Last-Modified that is strong for a cache: the
//     stored Date is at least 60 s after it (RFC 9110 8.8.2.2).  A weak or
//     malformed value never holds: the whole response is sent.
CondDecision evaluate_conditions(const Preconditions &req,
                                 const StoredValidators &stored);

}  // namespace fly::core
