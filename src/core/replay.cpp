// fly-edge pure core: the replay decision and the parsers it uses.
#include "replay.hpp"
#include "http_text.hpp"

#include <cstring>

namespace fly::core {

namespace {

struct MethodName {
    std::string_view name;
    uint32_t bit;
};

constexpr MethodName kMethods[] = {
    {"GET", kGet},           {"HEAD", kHead},         {"POST", kPost},
    {"PUT", kPut},           {"DELETE", kDelete},     {"PATCH", kPatch},
    {"OPTIONS", kOptions},   {"PROPFIND", kPropfind}, {"PROPPATCH", kProppatch},
    {"MKCOL", kMkcol},       {"COPY", kCopy},         {"MOVE", kMove},
    {"LOCK", kLock},         {"UNLOCK", kUnlock},     {"TRACE", kTrace},
    {"CONNECT", kConnect},
};

bool all_digits(std::string_view s)
{
    return all_chars(s, is_digit);
}

int64_t to_int(std::string_view digits)
{
    int64_t v = 0;
    for (char c : digits) {
        v = v * 10 + (c - '0');
    }
    return v;
}

// Characters allowed in a fly-replay-src value: visible ASCII, no
// separators that would end the item.
bool valid_value(std::string_view v)
{
    if (v.empty()) {
        return false;
    }
    for (unsigned char c : v) {
        if (c <= 0x20 || c >= 0x7f || c == ';' || c == '=' || c == ',') {
            return false;
        }
    }
    return true;
}

// Fly's proxy buffers a body whole to replay it: it needs its length,
// and the length within fly_replay_max_body.
bool body_replayable(const ReplayInput &in)
{
    return !in.has_body || (in.length_known && in.content_length <= in.max_body);
}

ReplayAction unreplayable_body(const ReplayInput &in)
{
    return in.length_known ? ReplayAction::too_large : ReplayAction::no_length;
}

}  // namespace

uint32_t method_from_name(std::string_view name)
{
    for (const auto &m : kMethods) {
        if (m.name == name) {
            return m.bit;
        }
    }
    return 0;
}

bool nginx_accepts_method(std::string_view name)
{
    return all_chars(name, [](char c) {
        return (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
    });
}

bool method_in(const MethodSet &set, uint32_t bit, std::string_view name)
{
    if (bit != 0) {
        return (set.bits & bit) != 0;
    }
    // A method the shell has no bit for (nginx maps fewer methods than
    // the core knows by name, e.g. CONNECT), or any other token.
    if ((set.bits & method_from_name(name)) != 0) {
        return true;
    }
    for (size_t i = 0; i < set.nnames; i++) {
        if (set.names[i] == name) {
            return true;
        }
    }
    return false;
}

ReplayDecision decide_replay(const ReplayInput &in)
{
    ReplayDecision d;

    if (in.mode == ReplayMode::off || in.is_primary || in.bypass) {
        return d;
    }

    if (in.mode == ReplayMode::always) {
        d.state = "always";
    } else if (in.method_matches) {
        d.state = "method";
    } else if (in.when) {
        d.state = "when";
    } else if (in.sticky) {
        d.state = "sticky";
    } else {
        return d;
    }

    // This request would go to the primary.  If it was replayed here
    // already (or Fly failed to reach the primary and fell back to us),
    // replaying again would loop: refuse instead.
    if (in.replay_src || in.replay_failed) {
        d.action = ReplayAction::loop;
        return d;
    }

    if (in.has_forward && in.forward_always) {
        d.action = ReplayAction::forward;
        return d;
    }

    // Fly's proxy cannot replay a body it has not buffered whole.
    if (!body_replayable(in)) {
        d.action = in.has_forward ? ReplayAction::forward : unreplayable_body(in);
        return d;
    }

    d.action = ReplayAction::replay;
    return d;
}

ReplayDecision decide_capture(const ReplayInput &in, const CaptureInput &c)
{
    ReplayDecision d;

    if (in.mode == ReplayMode::off || in.is_primary || in.bypass
        || !c.status_listed || !c.from_app || c.app_replays || c.answered_here
        || in.replay_src || in.replay_failed
        || (in.has_forward && in.forward_always))
    {
        return d;
    }

    d.state = "captured";
    // The body went to the app already; Fly still holds it only if it
    // could buffer it.  A forward is too late now: the answer passes.
    d.action = body_replayable(in) ? ReplayAction::replay : unreplayable_body(in);
    return d;
}

std::string replay_header(std::string_view region, std::string_view state)
{
    std::string v;
    v.reserve(7 + region.size() + 7 + state.size());
    v.append("region=").append(region);
    if (!state.empty()) {
        v.append(";state=").append(state);
    }
    return v;
}

bool parse_replay_src(std::string_view value, ReplaySrc &out)
{
    out = ReplaySrc{};
    bool seen_instance = false, seen_region = false, seen_t = false,
         seen_state = false;

    if (value.empty()) {
        return false;
    }

    size_t pos = 0;
    while (pos <= value.size()) {
        size_t end = value.find(';', pos);
        if (end == std::string_view::npos) {
            end = value.size();
        }
        std::string_view item = value.substr(pos, end - pos);
        size_t eq = item.find('=');
        if (eq == std::string_view::npos || eq == 0) {
            return false;
        }
        std::string_view key = item.substr(0, eq);
        std::string_view val = item.substr(eq + 1);
        if (!valid_value(key) || !valid_value(val)) {
            return false;
        }

        bool *seen = nullptr;
        if (key == "instance") {
            seen = &seen_instance;
            out.instance = val;
        } else if (key == "region") {
            seen = &seen_region;
            out.region = val;
        } else if (key == "t") {
            seen = &seen_t;
            if (!all_digits(val) || val.size() > 18) {
                return false;
            }
            out.t = to_int(val);
        } else if (key == "state") {
            seen = &seen_state;
            out.state = val;
        }
        if (seen != nullptr) {
            if (*seen) {
                return false;  // duplicate key
            }
            *seen = true;
        }
        pos = end + 1;
    }

    return seen_region && seen_t;
}

bool find_cookie(std::string_view header, std::string_view name,
                 std::string_view &value)
{
    size_t pos = 0;
    while (pos < header.size()) {
        size_t end = header.find(';', pos);
        if (end == std::string_view::npos) {
            end = header.size();
        }
        std::string_view pair = trim_ows(header.substr(pos, end - pos));
        size_t eq = pair.find('=');
        if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
            std::string_view v = pair.substr(eq + 1);
            if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
                v = v.substr(1, v.size() - 2);
            }
            value = v;
            return true;
        }
        pos = end + 1;
    }
    return false;
}

bool parse_sticky_until(std::string_view value, int64_t &until)
{
    if (!all_digits(value) || value.size() > 12) {
        return false;
    }
    until = to_int(value);
    return true;
}

std::string sticky_cookie(int64_t now_usec, int64_t seconds)
{
    int64_t now_ceil = now_usec / 1000000 + (now_usec % 1000000 > 0 ? 1 : 0);
    std::string c(kStickyCookie);
    c.append("=").append(std::to_string(now_ceil + seconds));
    c.append("; Max-Age=").append(std::to_string(seconds));
    c.append("; Path=/; HttpOnly; SameSite=Lax");
    return c;
}

}  // namespace fly::core
