// fly-edge pure core: the replay decision and the parsers it uses.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fly::core {

enum class ReplayMode : uint8_t { off, on, always };

// The common methods as a bit set of our own (the nginx shell maps
// r->method); any other method token is matched by name (MethodSet).
enum Method : uint32_t {
    kGet = 1u << 0, kHead = 1u << 1, kPost = 1u << 2, kPut = 1u << 3,
    kDelete = 1u << 4, kPatch = 1u << 5, kOptions = 1u << 6,
    kPropfind = 1u << 7, kProppatch = 1u << 8, kMkcol = 1u << 9,
    kCopy = 1u << 10, kMove = 1u << 11, kLock = 1u << 12,
    kUnlock = 1u << 13, kTrace = 1u << 14, kConnect = 1u << 15,
};
constexpr uint32_t kDefaultReplayMethods = kPost | kPut | kPatch | kDelete;

// "POST" -> kPost (case-sensitive, as HTTP methods are); 0 if it is not
// one of the common methods above.
uint32_t method_from_name(std::string_view name);

// RFC 9110 9.1: a method is any token (is_token(), http_text.hpp),
// case-sensitive.  nginx's request-line parser accepts only upper-case
// letters, '_' and '-' in a method (anything else gets 400): a valid
// token outside that set never reaches a location.
bool nginx_accepts_method(std::string_view name);

// A configured list of methods (fly_replay_methods): the common ones as
// bits, every other token by name.
struct MethodSet {
    uint32_t bits = 0;
    const std::string_view *names = nullptr;   // tokens method_from_name() does not know
    size_t nnames = 0;
};

// Is the request's method in `set`?  `bit` is the request's method as a
// Method bit when the shell knows it (0 otherwise), `name` the method as
// the client sent it; compared case-sensitively.
bool method_in(const MethodSet &set, uint32_t bit, std::string_view name);

// Everything the decision needs, gathered by the shell from the request
// and the location's configuration.
struct ReplayInput {
    ReplayMode mode = ReplayMode::off;
    bool is_primary = false;        // this region is the primary region
    bool method_matches = false;    // method is in fly_replay_methods
    bool bypass = false;            // a fly_replay_bypass value is set
    bool when = false;              // a fly_replay_when value is set
    bool replay_src = false;        // a well-formed fly-replay-src came in
    bool replay_failed = false;     // fly-replay-failed came in
    bool sticky = false;            // the fly-replay-until cookie is live
    bool has_body = false;          // a body follows (Content-Length > 0 or chunked)
    bool length_known = true;       // false for chunked bodies
    int64_t content_length = 0;     // when known
    int64_t max_body = 1 << 20;     // fly_replay_max_body
    bool has_forward = false;       // fly_replay_forward is set
    bool forward_always = false;    // ... with "always"
};

enum class ReplayAction : uint8_t {
    pass,        // let the request through untouched
    replay,      // answer with fly-replay
    forward,     // send through the fly_replay_forward location
    loop,        // 503: already replayed (or replay failed) and still not primary
    too_large,   // 413: body over fly_replay_max_body, no forward location
    no_length,   // 411: chunked body, no forward location
};

struct ReplayDecision {
    ReplayAction action = ReplayAction::pass;
    // The `state` reason: "always", "method", "when", "sticky" (the first
    // that applies, in that order), "captured"; empty for pass.
    std::string_view state;
};

// Before the request reaches the app.  fly_replay_bypass wins over every
// reason to replay.
ReplayDecision decide_replay(const ReplayInput &in);

// fly_replay_on_status: what is known of the answer about to be sent.
struct CaptureInput {
    bool status_listed = false;     // its status is in fly_replay_on_status
    bool from_app = false;          // the app's own status (an upstream's), not
                                    // nginx's error or a cached answer
    bool app_replays = false;       // the app's answer has a fly-replay of its own
    bool answered_here = false;     // this nginx answered the request itself (a
                                    // replay, 503, 411, 413) or forwarded it
};

// After the app answered, before any byte of the answer was sent: is it
// replaced by a replay to the primary (`state=captured`)?  `in` holds the
// request's facts as for decide_replay().  Actions: replay, pass, or
// too_large / no_length when the status matched but Fly could not replay
// the body (the app's answer then passes).  Never for a request that was
// replayed already (fly-replay-src) or that Fly failed to replay, never
// with fly_replay_forward ... always (no Fly proxy to honour a replay),
// and fly_replay_bypass wins here too.
ReplayDecision decide_capture(const ReplayInput &in, const CaptureInput &c);

// fly-replay response header value: "region=<region>;state=<state>".
std::string replay_header(std::string_view region, std::string_view state);

// fly-replay-src: instance=<id>;region=<src>;t=<µs>;state=<state>
// Keys in any order, unknown keys ignored; region and t required; no
// spaces, no empty values, no duplicate keys, t all digits.
struct ReplaySrc {
    std::string_view instance, region, state;
    int64_t t = 0;
};
bool parse_replay_src(std::string_view value, ReplaySrc &out);

// Finds cookie `name` in a Cookie header value ("a=1; b=2").  Returns
// false when absent.  The value is returned without surrounding quotes.
bool find_cookie(std::string_view header, std::string_view name,
                 std::string_view &value);

// The fly-replay-until cookie value: unix seconds, 1..12 digits.
bool parse_sticky_until(std::string_view value, int64_t &until);

// Set-Cookie value for the sticky cookie: live for at least `seconds`
// after `now_usec` (unix time in microseconds).  The value stays whole
// seconds (old cookies parse the same), so `now` is rounded up: the
// value ends `seconds` to `seconds` + 1 after `now` (truncated, it could
// end a second early).  Max-Age is `seconds`: the client keeps the
// cookie at least that long after it got it, so neither ends early.
std::string sticky_cookie(int64_t now_usec, int64_t seconds);

constexpr std::string_view kStickyCookie = "fly-replay-until";

}  // namespace fly::core
