// Unit tests: entity tags, their lists, and conditional requests answered
// from a stored response (RFC 9110 13.2.2's order, RFC 9111 4.3.2).
#include "unit.hpp"

#include "core/cache_control.hpp"
#include "core/conditional.hpp"

using namespace fly::core;

namespace {

// Tue, 01 Oct 2024 10:00:00 GMT
constexpr int64_t kLm = 1727776800;
constexpr std::string_view kLmText = "Tue, 01 Oct 2024 10:00:00 GMT";
constexpr std::string_view kBefore = "Tue, 01 Oct 2024 09:59:59 GMT";   // kLm - 1
constexpr std::string_view kAfter = "Tue, 01 Oct 2024 11:00:00 GMT";    // kLm + 3600

EntityTag tag_of(std::string_view v)
{
    EntityTag t;
    if (!parse_entity_tag(v, t)) {
        print_error("parse_entity_tag(%s) failed\n", std::string(v).c_str());
        fail();
    }
    return t;
}

void test_parse_entity_tag(void **)
{
    EntityTag t = tag_of("\"abc\"");
    assert_sv_equal(t.opaque, "abc");
    assert_false(t.weak);
    t = tag_of("W/\"abc\"");
    assert_sv_equal(t.opaque, "abc");
    assert_true(t.weak);
    t = tag_of("  \"\"\t");                        // empty opaque tag, white space around
    assert_sv_equal(t.opaque, "");
    t = tag_of("\"a,b\"");                         // etagc holds ','
    assert_sv_equal(t.opaque, "a,b");

    EntityTag x;
    for (std::string_view v : {"", "abc", "\"abc", "abc\"", "w/\"abc\"", "W/abc", "W/ \"a\"", "\"a\"b",
                               "\"a\" \"b\"", "\"a\", \"b\"", "*", "W/", "\"a\"\"", "\"a\\\"b\"",
                               "\"a\tb\""}) {
        if (parse_entity_tag(v, x)) {
            print_error("parse_entity_tag(%s) accepted it\n", std::string(v).c_str());
            fail();
        }
    }
    // ' ' (0x20), DEL and control bytes are not etagc; obs-text is
    assert_false(parse_entity_tag("\"a b\"", x));
    assert_false(parse_entity_tag("\"a\x7f\"", x));
    assert_false(parse_entity_tag(std::string_view("\"a\0\"", 4), x));
    assert_true(parse_entity_tag("\"caf\xc3\xa9\"", x));
}

void test_comparison(void **)
{
    EntityTag s1 = tag_of("\"1\""), w1 = tag_of("W/\"1\""), s2 = tag_of("\"2\""), w2 = tag_of("W/\"2\"");
    // RFC 9110 8.8.3.2's table
    assert_false(strong_match(w1, w1));
    assert_true(weak_match(w1, w1));
    assert_false(strong_match(w1, w2));
    assert_false(weak_match(w1, w2));
    assert_false(strong_match(w1, s1));
    assert_true(weak_match(w1, s1));
    assert_true(strong_match(s1, s1));
    assert_true(weak_match(s1, s1));
    assert_false(strong_match(s1, s2));
    assert_false(weak_match(s1, s2));
}

void test_tag_lists(void **)
{
    EntityTag stored = tag_of("\"v1\"");
    EntityTag weak_stored = tag_of("W/\"v1\"");
    auto m = [](std::string_view list, const EntityTag *s, bool weak) { return match_tag_list(list, s, weak); };

    assert_int_equal(m("*", &stored, false), TagListMatch::match);
    assert_int_equal(m(" * ", nullptr, true), TagListMatch::match);   // a stored response exists
    assert_int_equal(m("\"v1\"", &stored, false), TagListMatch::match);
    assert_int_equal(m("\"v2\"", &stored, false), TagListMatch::no_match);
    assert_int_equal(m("\"a\", \"v1\"", &stored, false), TagListMatch::match);
    assert_int_equal(m("\"a\",\"b\" , \"v1\"", &stored, true), TagListMatch::match);
    assert_int_equal(m(", ,\"v1\",, ", &stored, true), TagListMatch::match);   // empty elements
    assert_int_equal(m("\"v1,x\"", &stored, false), TagListMatch::no_match);  // one tag with a comma
    assert_int_equal(m("\"x,v1\"", &stored, false), TagListMatch::no_match);
    // the comparison
    assert_int_equal(m("W/\"v1\"", &stored, false), TagListMatch::no_match);
    assert_int_equal(m("W/\"v1\"", &stored, true), TagListMatch::match);
    assert_int_equal(m("\"v1\"", &weak_stored, false), TagListMatch::no_match);
    assert_int_equal(m("\"v1\"", &weak_stored, true), TagListMatch::match);
    // nothing stored: a list never matches
    assert_int_equal(m("\"v1\"", nullptr, true), TagListMatch::no_match);
    // an empty list is valid and matches nothing
    assert_int_equal(m("", &stored, true), TagListMatch::no_match);
    assert_int_equal(m(" , ", &stored, true), TagListMatch::no_match);
    // malformed anywhere: the whole value is
    for (std::string_view v : {"v1", "\"v1", "\"v1\" x", "\"v1\" \"v2\"", "\"a\", v1", "\"v1\", junk",
                               "*, \"v1\"", "\"v1\", *", "w/\"v1\"", "W/v1", "\"v1\";q=1"}) {
        if (m(v, &stored, true) != TagListMatch::malformed) {
            print_error("match_tag_list(%s) is not malformed\n", std::string(v).c_str());
            fail();
        }
    }
}

StoredValidators entry(bool etag = true, bool lm = true)
{
    StoredValidators s;
    if (etag) {
        s.etag = "\"v1\"";
    }
    if (lm) {
        s.last_modified = kLmText;
    }
    s.date = "Wed, 02 Oct 2024 10:00:00 GMT";   // kLm + 1 day
    s.stored = kLm + 86400;
    return s;
}

Preconditions get()
{
    Preconditions p;
    p.get = true;
    return p;
}

CondOutcome outcome(const Preconditions &p, const StoredValidators &s = entry())
{
    return evaluate_conditions(p, s).outcome;
}

constexpr CondOutcome kFull = CondOutcome::full;
constexpr CondOutcome k304 = CondOutcome::not_modified;
constexpr CondOutcome k412 = CondOutcome::precondition_failed;

void test_no_preconditions(void **)
{
    CondDecision d = evaluate_conditions(get(), entry());
    assert_int_equal(d.outcome, kFull);
    assert_false(d.use_range);
    assert_true(d.ignored.empty());
}

// Step 1 and 2: If-Match (strong), else If-Unmodified-Since.
void test_if_match_and_unmodified(void **)
{
    Preconditions p = get();
    p.if_match = "\"v1\"";
    assert_int_equal(outcome(p), kFull);
    p.if_match = "\"v2\"";
    assert_int_equal(outcome(p), k412);
    p.if_match = "W/\"v1\"";
    assert_int_equal(outcome(p), k412);           // strong comparison
    p.if_match = "*";
    assert_int_equal(outcome(p), kFull);
    assert_int_equal(outcome(p, entry(false)), kFull);
    p.if_match = "\"v1\"";
    assert_int_equal(outcome(p, entry(false)), k412);   // no ETag stored
    p.if_match = "";
    assert_int_equal(outcome(p), k412);           // an empty list matches nothing

    // If-Unmodified-Since only without If-Match
    p = get();
    p.if_unmodified_since = kBefore;
    assert_int_equal(outcome(p), k412);
    p.if_unmodified_since = kLmText;
    assert_int_equal(outcome(p), kFull);
    p.if_unmodified_since = kAfter;
    assert_int_equal(outcome(p), kFull);
    p.if_unmodified_since = "yesterday";          // not a date: ignored
    assert_int_equal(outcome(p), kFull);
    p.if_unmodified_since = kBefore;
    assert_int_equal(outcome(p, entry(true, false)), kFull);   // no Last-Modified: ignored
    p.if_match = "\"v1\"";
    assert_int_equal(outcome(p), kFull);          // If-Match holds: IUS not looked at
    p.if_match = "garbage";                       // malformed: as if absent, IUS decides
    CondDecision d = evaluate_conditions(p, entry());
    assert_int_equal(d.outcome, k412);
    assert_sv_equal(d.ignored, "If-Match");
}

// Step 3 and 4: If-None-Match (weak), else If-Modified-Since.
void test_if_none_match_and_modified(void **)
{
    Preconditions p = get();
    p.if_none_match = "\"v1\"";
    assert_int_equal(outcome(p), k304);
    p.if_none_match = "W/\"v1\"";
    assert_int_equal(outcome(p), k304);           // weak comparison
    p.if_none_match = "\"x\", W/\"v1\"";
    assert_int_equal(outcome(p), k304);
    p.if_none_match = "*";
    assert_int_equal(outcome(p), k304);
    p.if_none_match = "\"v2\"";
    assert_int_equal(outcome(p), kFull);
    p.if_none_match = "\"v1\"";
    assert_int_equal(outcome(p, entry(false)), kFull);

    // the case: a matching If-None-Match wins over an earlier IMS
    p.if_none_match = "\"v1\"";
    p.if_modified_since = kBefore;
    assert_int_equal(outcome(p), k304);
    // and a non-matching one is not overruled by a later IMS
    p.if_none_match = "\"v2\"";
    p.if_modified_since = kAfter;
    assert_int_equal(outcome(p), kFull);

    // If-Modified-Since alone: Last-Modified <= IMS gives 304
    p = get();
    p.if_modified_since = kAfter;
    assert_int_equal(outcome(p), k304);
    p.if_modified_since = kLmText;
    assert_int_equal(outcome(p), k304);
    p.if_modified_since = kBefore;
    assert_int_equal(outcome(p), kFull);
    p.if_modified_since = "Tue, 01 Oct 2024 11:00:00 GMT, Tue, 01 Oct 2024 12:00:00 GMT";
    assert_int_equal(outcome(p), kFull);          // a list is not a date: ignored
    p.if_modified_since = "Tuesday, 01-Oct-24 11:00:00 GMT";
    assert_int_equal(outcome(p), k304);           // the obsolete forms are dates
    // RFC 9111 4.3.2: without Last-Modified, the Date, else the receipt time
    StoredValidators s = entry(true, false);
    s.date = kLmText;
    s.stored = kLm + 5000;
    p.if_modified_since = kAfter;
    assert_int_equal(outcome(p, s), k304);
    p.if_modified_since = kBefore;
    assert_int_equal(outcome(p, s), kFull);
    s.date.reset();
    p.if_modified_since = kAfter;                 // kLm + 3600 < receipt
    assert_int_equal(outcome(p, s), kFull);
    s.stored = kLm + 3600;
    assert_int_equal(outcome(p, s), k304);

    // a malformed If-None-Match is as if absent: IMS decides
    p = get();
    p.if_none_match = "v1";
    p.if_modified_since = kAfter;
    CondDecision d = evaluate_conditions(p, entry());
    assert_int_equal(d.outcome, k304);
    assert_sv_equal(d.ignored, "If-None-Match");
    p.if_modified_since.reset();
    assert_int_equal(outcome(p), kFull);
}

// The whole order: 1 before 3, 2 before 3.
void test_order(void **)
{
    Preconditions p = get();
    p.if_match = "\"v2\"";
    p.if_none_match = "\"v1\"";
    assert_int_equal(outcome(p), k412);
    p.if_match = "\"v1\"";
    assert_int_equal(outcome(p), k304);
    p = get();
    p.if_unmodified_since = kBefore;
    p.if_none_match = "\"v1\"";
    assert_int_equal(outcome(p), k412);
    p.if_unmodified_since = kAfter;
    p.if_modified_since = kAfter;
    p.if_none_match.reset();
    assert_int_equal(outcome(p), k304);
    // the ignored name is the first malformed one
    p = get();
    p.if_match = "x";
    p.if_none_match = "y";
    assert_sv_equal(evaluate_conditions(p, entry()).ignored, "If-Match");
}

// Methods: IMS is for GET and HEAD; an INM match is 412 for others.
void test_methods(void **)
{
    Preconditions p;
    p.head = true;
    p.if_none_match = "\"v1\"";
    assert_int_equal(outcome(p), k304);
    p.if_none_match.reset();
    p.if_modified_since = kAfter;
    assert_int_equal(outcome(p), k304);

    Preconditions other;                          // neither GET nor HEAD
    other.if_modified_since = kAfter;
    assert_int_equal(outcome(other), kFull);
    other.if_none_match = "\"v1\"";
    assert_int_equal(outcome(other), k412);
}

// RFC 9110 13.2.1: a stored response that is not 2xx ignores them all.
void test_status(void **)
{
    Preconditions p = get();
    p.if_match = "\"nope\"";
    p.if_none_match = "\"v1\"";
    p.range = true;
    for (int status : {404, 301, 500, 199}) {
        StoredValidators s = entry();
        s.status = status;
        CondDecision d = evaluate_conditions(p, s);
        assert_int_equal(d.outcome, kFull);
        assert_true(d.use_range);                 // nginx's range filter decides (it serves 200 only)
    }
    for (int status : {200, 203, 204, 299}) {
        StoredValidators s = entry();
        s.status = status;
        assert_int_equal(outcome(p, s), k412);
    }
}

// Step 5: Range for GET, with If-Range.
void test_range(void **)
{
    Preconditions p = get();
    p.range = true;
    assert_true(evaluate_conditions(p, entry()).use_range);
    p.if_range = "\"v1\"";
    assert_true(evaluate_conditions(p, entry()).use_range);
    p.if_range = " \"v1\" ";
    assert_true(evaluate_conditions(p, entry()).use_range);
    for (std::string_view v : {"\"v2\"", "W/\"v1\"", "v1", "\"v1", "", "*", "whenever",
                               "Tue, 01 Oct 2024 10:00:01 GMT"}) {
        p.if_range = v;
        if (evaluate_conditions(p, entry()).use_range) {
            print_error("If-Range: %s holds\n", std::string(v).c_str());
            fail();
        }
    }
    // a stored weak ETag never satisfies If-Range
    StoredValidators s = entry();
    s.etag = "W/\"v1\"";
    p.if_range = "\"v1\"";
    assert_false(evaluate_conditions(p, s).use_range);
    p.if_range = "W/\"v1\"";
    assert_false(evaluate_conditions(p, s).use_range);
    // a date: equal to a Last-Modified that is at least 60 s before Date
    p.if_range = kLmText;
    assert_true(evaluate_conditions(p, entry()).use_range);
    s = entry();
    s.date = "Tue, 01 Oct 2024 10:01:00 GMT";      // kLm + 60
    assert_true(evaluate_conditions(p, s).use_range);
    s.date = "Tue, 01 Oct 2024 10:00:59 GMT";
    assert_false(evaluate_conditions(p, s).use_range);
    s.date.reset();
    assert_false(evaluate_conditions(p, s).use_range);
    assert_false(evaluate_conditions(p, entry(true, false)).use_range);
    // a date that starts with W is a date, not a weak tag
    s = entry();
    s.last_modified = "Wed, 09 Oct 2024 06:00:00 GMT";
    s.date = "Wed, 09 Oct 2024 07:00:00 GMT";
    p.if_range = "Wed, 09 Oct 2024 06:00:00 GMT";
    assert_true(evaluate_conditions(p, s).use_range);

    // no Range: If-Range is nothing; HEAD and other methods: no range
    p = get();
    p.if_range = "\"v2\"";
    assert_false(evaluate_conditions(p, entry()).use_range);
    Preconditions h;
    h.head = true;
    h.range = true;
    assert_false(evaluate_conditions(h, entry()).use_range);
    // preconditions come first
    p = get();
    p.range = true;
    p.if_none_match = "\"v1\"";
    CondDecision d = evaluate_conditions(p, entry());
    assert_int_equal(d.outcome, k304);
    p.if_none_match = "\"v2\"";
    d = evaluate_conditions(p, entry());
    assert_int_equal(d.outcome, kFull);
    assert_true(d.use_range);
}

// Stored values that do not parse count as absent.
void test_unreadable_stored(void **)
{
    StoredValidators s = entry();
    s.etag = "v1";                                // unquoted
    Preconditions p = get();
    p.if_none_match = "\"v1\"";
    assert_int_equal(outcome(p, s), kFull);
    p.if_none_match = "*";
    assert_int_equal(outcome(p, s), k304);
    p = get();
    p.if_match = "\"v1\"";
    assert_int_equal(outcome(p, s), k412);

    s = entry();
    s.last_modified = "yesterday";
    p = get();
    p.if_unmodified_since = kBefore;              // no Last-Modified: ignored
    assert_int_equal(outcome(p, s), kFull);
    p = get();
    p.if_modified_since = "Wed, 02 Oct 2024 10:00:00 GMT";   // the stored Date stands in
    assert_int_equal(outcome(p, s), k304);
    p.if_modified_since = kAfter;
    assert_int_equal(outcome(p, s), kFull);
    s.date = "soon";                              // then the receipt time (kLm + 1 day)
    assert_int_equal(outcome(p, s), kFull);
    p.if_modified_since = "Thu, 03 Oct 2024 10:00:00 GMT";
    assert_int_equal(outcome(p, s), k304);
}

void test_garbage(void **)
{
    // never crashes, whatever the bytes
    std::string v;
    for (int i = 0; i < 256; i++) {
        v += static_cast<char>(i);
    }
    Preconditions p = get();
    p.range = true;
    p.if_match = v;
    p.if_none_match = v;
    p.if_modified_since = v;
    p.if_unmodified_since = v;
    p.if_range = v;
    CondDecision d = evaluate_conditions(p, entry());
    assert_int_equal(d.outcome, kFull);
    assert_false(d.use_range);
    assert_sv_equal(d.ignored, "If-Match");
    EntityTag t;
    assert_false(parse_entity_tag(v, t));
    assert_int_equal(match_tag_list(std::string_view("\"a\"\0", 4), nullptr, true), TagListMatch::malformed);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_entity_tag),
        cmocka_unit_test(test_comparison),
        cmocka_unit_test(test_tag_lists),
        cmocka_unit_test(test_no_preconditions),
        cmocka_unit_test(test_if_match_and_unmodified),
        cmocka_unit_test(test_if_none_match_and_modified),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_unreadable_stored),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
