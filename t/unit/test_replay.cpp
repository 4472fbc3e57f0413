// Unit tests of the replay decision and the parsers it uses.
#include "unit.hpp"
#include "core/http_text.hpp"
#include "core/replay.hpp"

using namespace fly::core;

namespace {

ReplayInput write_in_replica()
{
    ReplayInput in;
    in.mode = ReplayMode::on;
    in.method_matches = true;
    return in;
}

void test_off_and_primary_pass(void **)
{
    ReplayInput in = write_in_replica();
    in.mode = ReplayMode::off;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);

    in = write_in_replica();
    in.is_primary = true;
    in.replay_src = true;     // even a replayed request passes in the primary
    in.replay_failed = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);

    in.mode = ReplayMode::always;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);
}

void test_method_replayed(void **)
{
    ReplayDecision d = decide_replay(write_in_replica());
    assert_int_equal((int) d.action, (int) ReplayAction::replay);
    assert_sv_equal(d.state, "method");
}

void test_read_passes_unless_always_or_sticky(void **)
{
    ReplayInput in = write_in_replica();
    in.method_matches = false;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);

    in.mode = ReplayMode::always;
    ReplayDecision d = decide_replay(in);
    assert_int_equal((int) d.action, (int) ReplayAction::replay);
    assert_sv_equal(d.state, "always");

    in.mode = ReplayMode::on;
    in.sticky = true;
    d = decide_replay(in);
    assert_int_equal((int) d.action, (int) ReplayAction::replay);
    assert_sv_equal(d.state, "sticky");
}

void test_bypass_wins(void **)
{
    ReplayInput in = write_in_replica();
    in.bypass = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);
    in.mode = ReplayMode::always;
    in.sticky = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);
}

void test_loop(void **)
{
    ReplayInput in = write_in_replica();
    in.replay_src = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::loop);

    in = write_in_replica();
    in.replay_failed = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::loop);

    // a replayed read that this region would not replay passes
    in.method_matches = false;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);

    // loop wins over forward too: forwarding would also leave this region
    in = write_in_replica();
    in.replay_src = true;
    in.has_forward = true;
    in.forward_always = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::loop);
}

void test_bodies(void **)
{
    ReplayInput in = write_in_replica();
    in.has_body = true;
    in.content_length = 1 << 20;             // exactly the limit: replayable
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::replay);

    in.content_length = (1 << 20) + 1;
    assert_int_equal((int) decide_replay(in).action,
                     (int) ReplayAction::too_large);
    in.has_forward = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::forward);

    in = write_in_replica();
    in.has_body = true;
    in.length_known = false;                 // chunked
    assert_int_equal((int) decide_replay(in).action,
                     (int) ReplayAction::no_length);
    in.has_forward = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::forward);

    // no body at all (DELETE): replayable
    in = write_in_replica();
    in.has_body = false;
    in.length_known = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::replay);
}

void test_forward_always(void **)
{
    ReplayInput in = write_in_replica();
    in.has_forward = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::replay);
    in.forward_always = true;
    ReplayDecision d = decide_replay(in);
    assert_int_equal((int) d.action, (int) ReplayAction::forward);
    assert_sv_equal(d.state, "method");
}

void test_methods(void **)
{
    assert_int_equal(method_from_name("POST"), kPost);
    assert_int_equal(method_from_name("PROPFIND"), kPropfind);
    assert_int_equal(method_from_name("post"), 0);
    assert_int_equal(method_from_name(""), 0);
    assert_int_equal(method_from_name("POSTX"), 0);
    assert_int_equal(kDefaultReplayMethods, kPost | kPut | kPatch | kDelete);
}

void test_method_tokens(void **)
{
    // RFC 9110 9.1: any token
    for (const char *ok : {"PURGE", "PROPFIND", "REPORT", "SEARCH", "M-SEARCH",
                           "BAN", "x", "post", "A1!#$%&'*+-.^_`|~z"}) {
        if (!is_token(ok)) {
            fail_msg("refused the method token \"%s\"", ok);
        }
    }
    for (const char *bad : {"", "GE T", "GET/", "P(", "A,B", "\"X\"", "a\tb",
                            "M\xc3\xa9"}) {
        if (is_token(bad)) {
            fail_msg("accepted \"%s\" as a method token", bad);
        }
    }
    assert_false(is_token(std::string_view("A\0B", 3)));

    // what nginx's request line parser lets through
    assert_true(nginx_accepts_method("PURGE"));
    assert_true(nginx_accepts_method("M-SEARCH"));
    assert_true(nginx_accepts_method("VERSION_CONTROL"));
    assert_false(nginx_accepts_method("purge"));
    assert_false(nginx_accepts_method("X1"));
    assert_false(nginx_accepts_method("A.B"));
    assert_false(nginx_accepts_method(""));
}

void test_method_in(void **)
{
    const std::string_view names[] = {"PURGE", "FLY-INVENTED"};
    MethodSet set;
    set.bits = kPost | kConnect;
    set.names = names;
    set.nnames = 2;

    // a method the shell knows: its bit decides
    assert_true(method_in(set, kPost, "POST"));
    assert_false(method_in(set, kGet, "GET"));
    // by name: listed tokens, case-sensitive, whole names only
    assert_true(method_in(set, 0, "PURGE"));
    assert_true(method_in(set, 0, "FLY-INVENTED"));
    assert_false(method_in(set, 0, "purge"));
    assert_false(method_in(set, 0, "PURG"));
    assert_false(method_in(set, 0, "PURGEX"));
    assert_false(method_in(set, 0, "REPORT"));
    assert_false(method_in(set, 0, ""));
    // a common method nginx gives no bit for is found by its name
    assert_true(method_in(set, 0, "CONNECT"));
    assert_true(method_in(set, 0, "POST"));
    assert_false(method_in(set, 0, "DELETE"));

    MethodSet none;
    assert_false(method_in(none, 0, "PURGE"));
    assert_false(method_in(none, kPost, "POST"));
}

void test_when(void **)
{
    // fly_replay_when replays whatever the method, with state=when
    ReplayInput in = write_in_replica();
    in.method_matches = false;
    in.when = true;
    ReplayDecision d = decide_replay(in);
    assert_int_equal((int) d.action, (int) ReplayAction::replay);
    assert_sv_equal(d.state, "when");

    // the more specific reasons name the state first; when before sticky
    in.method_matches = true;
    assert_sv_equal(decide_replay(in).state, "method");
    in.method_matches = false;
    in.sticky = true;
    assert_sv_equal(decide_replay(in).state, "when");
    in.mode = ReplayMode::always;
    assert_sv_equal(decide_replay(in).state, "always");

    // off, the primary, and fly_replay_bypass all win over it
    in = write_in_replica();
    in.method_matches = false;
    in.when = true;
    in.mode = ReplayMode::off;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);
    in.mode = ReplayMode::on;
    in.is_primary = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);
    in.is_primary = false;
    in.bypass = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::pass);

    // the loop guard and the body rules are those of any replay
    in.bypass = false;
    in.replay_src = true;
    assert_int_equal((int) decide_replay(in).action, (int) ReplayAction::loop);
    in.replay_src = false;
    in.has_body = true;
    in.length_known = false;
    assert_int_equal((int) decide_replay(in).action,
                     (int) ReplayAction::no_length);
    in.length_known = true;
    in.content_length = in.max_body + 1;
    assert_int_equal((int) decide_replay(in).action,
                     (int) ReplayAction::too_large);
    in.has_forward = true;
    d = decide_replay(in);
    assert_int_equal((int) d.action, (int) ReplayAction::forward);
    assert_sv_equal(d.state, "when");
}

// A GET in a replica region that the app answered with a listed status.
void capture_case(ReplayInput &in, CaptureInput &c)
{
    in = ReplayInput();
    in.mode = ReplayMode::on;
    c = CaptureInput();
    c.status_listed = true;
    c.from_app = true;
}

void test_capture(void **)
{
    ReplayInput in;
    CaptureInput c;
    capture_case(in, c);
    ReplayDecision d = decide_capture(in, c);
    assert_int_equal((int) d.action, (int) ReplayAction::replay);
    assert_sv_equal(d.state, "captured");

    // a write the location does not replay, with a replayable body
    in.method_matches = false;
    in.has_body = true;
    in.content_length = in.max_body;
    assert_int_equal((int) decide_capture(in, c).action,
                     (int) ReplayAction::replay);

    struct {
        const char *what;
        void (*set)(ReplayInput &, CaptureInput &);
    } const passes[] = {
        {"fly_replay off", [](ReplayInput &i, CaptureInput &) { i.mode = ReplayMode::off; }},
        {"the primary", [](ReplayInput &i, CaptureInput &) { i.is_primary = true; }},
        {"fly_replay_bypass", [](ReplayInput &i, CaptureInput &) { i.bypass = true; }},
        {"a status not listed", [](ReplayInput &, CaptureInput &k) { k.status_listed = false; }},
        {"nginx's own answer or a HIT", [](ReplayInput &, CaptureInput &k) { k.from_app = false; }},
        {"the app's own fly-replay", [](ReplayInput &, CaptureInput &k) { k.app_replays = true; }},
        {"answered here", [](ReplayInput &, CaptureInput &k) { k.answered_here = true; }},
        {"fly-replay-src", [](ReplayInput &i, CaptureInput &) { i.replay_src = true; }},
        {"fly-replay-failed", [](ReplayInput &i, CaptureInput &) { i.replay_failed = true; }},
        {"forward always", [](ReplayInput &i, CaptureInput &) {
             i.has_forward = true;
             i.forward_always = true;
         }},
    };
    for (const auto &p : passes) {
        capture_case(in, c);
        p.set(in, c);
        if (decide_capture(in, c).action != ReplayAction::pass) {
            fail_msg("captured despite %s", p.what);
        }
    }

    // fly_replay always, when, sticky: they would have replayed before
    // the app; if the app was reached anyway (bypass aside), capture works
    capture_case(in, c);
    in.mode = ReplayMode::always;
    assert_int_equal((int) decide_capture(in, c).action,
                     (int) ReplayAction::replay);

    // bodies Fly could not replay: the app's answer passes (with a reason)
    capture_case(in, c);
    in.has_body = true;
    in.length_known = false;
    assert_int_equal((int) decide_capture(in, c).action,
                     (int) ReplayAction::no_length);
    in.has_forward = true;     // too late to forward: the body is gone
    assert_int_equal((int) decide_capture(in, c).action,
                     (int) ReplayAction::no_length);
    capture_case(in, c);
    in.has_body = true;
    in.content_length = in.max_body + 1;
    assert_int_equal((int) decide_capture(in, c).action,
                     (int) ReplayAction::too_large);
}

void test_replay_header(void **)
{
    assert_sv_equal(replay_header("scl", "method"), "region=scl;state=method");
    assert_sv_equal(replay_header("scl", ""), "region=scl");
}

void test_parse_replay_src(void **)
{
    ReplaySrc s;
    assert_true(parse_replay_src(
        "instance=0x1;region=ord;t=1700000000000000;state=method", s));
    assert_sv_equal(s.instance, "0x1");
    assert_sv_equal(s.region, "ord");
    assert_sv_equal(s.state, "method");
    assert_true(s.t == 1700000000000000LL);

    assert_true(parse_replay_src("t=1;region=atl", s));      // any order
    assert_sv_equal(s.region, "atl");
    assert_true(parse_replay_src("region=atl;t=5;future=x", s));  // unknown key

    const char *bad[] = {
        "", "region=atl", "t=1", "region=;t=1", "region=atl;t=",
        "region=atl;t=12a", "region=atl;t=1;", ";region=atl;t=1",
        "region=atl;;t=1", "region atl;t=1", "region=a tl;t=1",
        "region=atl;t=1;region=ord", "=x;region=atl;t=1",
        "region=atl;t=1234567890123456789", "region=\x01;t=1",
        "region=atl,ord;t=1", "region=atl;t=1;state=a=b",
    };
    for (const char *b : bad) {
        if (parse_replay_src(b, s)) {
            fail_msg("accepted malformed fly-replay-src \"%s\"", b);
        }
    }
}

void test_cookies(void **)
{
    std::string_view v;
    assert_true(find_cookie("a=1; fly-replay-until=123; b=2", kStickyCookie, v));
    assert_sv_equal(v, "123");
    assert_true(find_cookie("fly-replay-until=\"77\"", kStickyCookie, v));
    assert_sv_equal(v, "77");
    assert_true(find_cookie("a=1;fly-replay-until=9", kStickyCookie, v));
    assert_sv_equal(v, "9");
    assert_false(find_cookie("xfly-replay-until=1", kStickyCookie, v));
    assert_false(find_cookie("", kStickyCookie, v));
    assert_false(find_cookie("fly-replay-until", kStickyCookie, v));
    assert_false(find_cookie(";;;", kStickyCookie, v));

    int64_t until;
    assert_true(parse_sticky_until("1700000005", until));
    assert_true(until == 1700000005);
    assert_false(parse_sticky_until("", until));
    assert_false(parse_sticky_until("-1", until));
    assert_false(parse_sticky_until("12x", until));
    assert_false(parse_sticky_until("1234567890123", until));
}

void test_sticky_cookie(void **)
{
    assert_sv_equal(sticky_cookie(1000 * 1000000LL, 5),
                    "fly-replay-until=1005; Max-Age=5; Path=/; HttpOnly; "
                    "SameSite=Lax");
    // a write answered within a second is rounded up: the cookie holds
    // at least the configured time (5.000 to 5.999 s), never less
    assert_sv_equal(sticky_cookie(1000 * 1000000LL + 1, 5),
                    "fly-replay-until=1006; Max-Age=5; Path=/; HttpOnly; "
                    "SameSite=Lax");
    assert_sv_equal(sticky_cookie(1000 * 1000000LL + 999999, 5),
                    "fly-replay-until=1006; Max-Age=5; Path=/; HttpOnly; "
                    "SameSite=Lax");
    const int64_t starts[] = {1700000000123456LL, 1700000000999999LL,
                              1700000001000000LL, 1700000001000001LL};
    for (int64_t now_usec : starts) {
        for (int64_t secs : {1, 5, 3600}) {
            std::string c = sticky_cookie(now_usec, secs);
            std::string_view v;
            int64_t until = 0;
            assert_true(find_cookie(c, kStickyCookie, v));
            assert_true(parse_sticky_until(v, until));
            // the window, until - now, is at least secs and under secs + 1
            assert_true(until * 1000000 - now_usec >= secs * 1000000);
            assert_true(until * 1000000 - now_usec < (secs + 1) * 1000000);
        }
    }
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_and_primary_pass),
        cmocka_unit_test(test_method_replayed),
        cmocka_unit_test(test_read_passes_unless_always_or_sticky),
        cmocka_unit_test(test_bypass_wins),
        cmocka_unit_test(test_loop),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_forward_always),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_method_tokens),
        cmocka_unit_test(test_method_in),
        cmocka_unit_test(test_when),
        cmocka_unit_test(test_capture),
        cmocka_unit_test(test_replay_header),
        cmocka_unit_test(test_parse_replay_src),
        cmocka_unit_test(test_cookies),
        cmocka_unit_test(test_sticky_cookie),
    };
    return cmocka_run_group_tests_name("replay", tests, nullptr, nullptr);
}
