// libFuzzer target: entity tags, If-Match / If-None-Match lists and the
// evaluation of a request's preconditions against a stored response
// (src/core/conditional.*).
//
// Input: '\n'-separated fields: If-Match, If-None-Match, If-Modified-Since,
// If-Unmodified-Since, If-Range (a field that is exactly "-" is absent),
// then the stored ETag, Last-Modified and Date as stored ("-" = none), then a line of
// words: get, head, range, status=N, stored=N.
//
// Properties:
//   - an accepted entity tag's opaque part is a view into the input, and
//     the tag written again parses to the same tag;
//   - a list's verdict: malformed whatever the stored tag and comparison;
//     a strong match is a weak match; with nothing stored only "*"
//     matches; a well-formed list (not "*") plus the stored tag matches (weakly;
//     strongly too when the stored tag is strong); plus ", x" is malformed;
//   - the decision: use_range only for a GET with Range that is sent whole
//     (full); a stored status outside 2xx gives full; no 412 without
//     If-Match / If-Unmodified-Since, no 304 without If-None-Match /
//     If-Modified-Since or for a method other than GET and HEAD; removing
//     If-Range never takes a range away; `ignored` names a list that is
//     malformed.
#include "fuzz.hpp"

#include "core/cache_control.hpp"
#include "core/conditional.hpp"

#include <optional>

using namespace fly::core;

namespace {

std::optional<std::string_view> field(std::string_view v)
{
    if (v == "-") {
        return std::nullopt;
    }
    return v;
}

std::string written(const EntityTag &t)
{
    std::string s = t.weak ? "W/\"" : "\"";
    s.append(t.opaque);
    s += '"';
    return s;
}

void check_list(std::string_view list, const EntityTag *stored)
{
    TagListMatch strong = match_tag_list(list, stored, false);
    TagListMatch weak = match_tag_list(list, stored, true);
    TagListMatch none = match_tag_list(list, nullptr, true);
    bool bad = strong == TagListMatch::malformed;
    FUZZ_CHECK(bad == (weak == TagListMatch::malformed));
    FUZZ_CHECK(bad == (none == TagListMatch::malformed));
    FUZZ_CHECK(strong != TagListMatch::match || weak == TagListMatch::match);
    FUZZ_CHECK(none != TagListMatch::match || trim_ows(list) == "*");
    if (bad) {
        return;
    }
    std::string more(list);
    more.append(", x");
    FUZZ_CHECK(match_tag_list(more, stored, true) == TagListMatch::malformed);
    if (stored != nullptr && trim_ows(list) != "*") {
        std::string with(list);
        with.append(",").append(written(*stored));
        FUZZ_CHECK(match_tag_list(with, stored, true) == TagListMatch::match);
        if (!stored->weak) {
            FUZZ_CHECK(match_tag_list(with, stored, false) == TagListMatch::match);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view input = fuzz::as_view(data, size);
    std::vector<std::string_view> l = fuzz::split_lines(input, 9);

    Preconditions p;
    p.if_match = field(l[0]);
    p.if_none_match = field(l[1]);
    p.if_modified_since = field(l[2]);
    p.if_unmodified_since = field(l[3]);
    p.if_range = field(l[4]);

    StoredValidators s;
    s.etag = field(l[5]);
    s.last_modified = field(l[6]);
    s.date = field(l[7]);
    EntityTag tag;
    bool stored_tag = s.etag && parse_entity_tag(*s.etag, tag);
    if (stored_tag) {
        FUZZ_CHECK(fuzz::inside(tag.opaque, input));
        std::string text = written(tag);
        EntityTag again;
        FUZZ_CHECK(parse_entity_tag(text, again));
        FUZZ_CHECK(again.weak == tag.weak && again.opaque == tag.opaque);
    }
    for (std::string_view w : fuzz::words(l[8])) {
        if (w == "get") p.get = true;
        else if (w == "head") p.head = true;
        else if (w == "range") p.range = true;
        else if (w.substr(0, 7) == "status=") s.status = static_cast<int>(fuzz::parse_num(w.substr(7)));
        else if (w.substr(0, 7) == "stored=") s.stored = fuzz::parse_num(w.substr(7)) % (int64_t{1} << 40);
    }

    const EntityTag *stored = stored_tag ? &tag : nullptr;
    for (const auto &list : {p.if_match, p.if_none_match}) {
        if (list) {
            check_list(*list, stored);
        }
    }

    CondDecision d = evaluate_conditions(p, s);
    FUZZ_CHECK(d.outcome == CondOutcome::full || d.outcome == CondOutcome::not_modified
               || d.outcome == CondOutcome::precondition_failed);
    FUZZ_CHECK(!d.use_range || (p.get && p.range && d.outcome == CondOutcome::full));
    if (s.status < 200 || s.status > 299) {
        FUZZ_CHECK(d.outcome == CondOutcome::full);
    }
    if (!p.if_match && !p.if_unmodified_since) {
        FUZZ_CHECK(d.outcome != CondOutcome::precondition_failed || !(p.get || p.head));
    }
    if ((!p.if_none_match && !p.if_modified_since) || !(p.get || p.head)) {
        FUZZ_CHECK(d.outcome != CondOutcome::not_modified);
    }
    if (!d.ignored.empty()) {
        std::optional<std::string_view> list =
            d.ignored == "If-Match" ? p.if_match : d.ignored == "If-None-Match" ? p.if_none_match
                                                                             : std::nullopt;
        FUZZ_CHECK(list && match_tag_list(*list, stored, true) == TagListMatch::malformed);
    }
    if (d.use_range) {
        Preconditions q = p;
        q.if_range.reset();
        FUZZ_CHECK(evaluate_conditions(q, s).use_range);
    }
    return 0;
}
