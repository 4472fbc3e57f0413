// libFuzzer target: expand_env() and expand_region() (the ${VAR} and
// {region} templates of string directives such as fly_redis), then
// parse_redis_url() on the result, as the shell does.
//
// Input: line 1 a region, the rest a template.  The environment is fixed:
// A=a, EMPTY= (set, empty), _x1=%, REDIS_PASSWORD=p@ss:/w${A}{region}
// (a value that looks like a template itself); every other name is unset.
//
// Properties:
//   - expand_env() agrees with a model of the rule in url.hpp (success,
//     output), and a value is never expanded again;
//   - a template without "${" comes out unchanged;
//   - a refusal has a message; for an unterminated "${" (whose text may be
//     a literal password) the message holds none of the template (checked
//     with a marker byte 0x01);
//   - expand_region() agrees with a model (leftmost, non-overlapping
//     replacement), and replacing by "{region}" itself is the identity;
//   - valid_region() takes exactly 1..32 of [a-z0-9-].
#include "fuzz.hpp"

#include <cstring>

#include "core/url.hpp"

using namespace fly::core;

namespace {

const char *env(const std::string &name)
{
    if (name == "A") return "a";
    if (name == "EMPTY") return "";
    if (name == "_x1") return "%";
    if (name == "REDIS_PASSWORD") return "p@ss:/w${A}{region}";
    return nullptr;
}

bool name_ok(std::string_view n)
{
    auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
    if (n.empty() || !alpha(n[0])) return false;
    for (char c : n) {
        if (!alpha(c) && !(c >= '0' && c <= '9')) return false;
    }
    return true;
}

enum class Model { ok, unterminated, bad_name, unset };

Model model_env(std::string_view in, std::string &out)
{
    out.clear();
    for (size_t i = 0; i < in.size(); i++) {
        if (in.compare(i, 2, "${") != 0) {
            out += in[i];
            continue;
        }
        size_t close = in.find('}', i + 2);
        if (close == std::string_view::npos) return Model::unterminated;
        std::string name(in.substr(i + 2, close - i - 2));
        if (!name_ok(name)) return Model::bad_name;
        const char *v = env(name);
        if (v == nullptr) return Model::unset;
        out += v;
        i = close;
    }
    return Model::ok;
}

std::string model_region(std::string_view in, std::string_view region)
{
    std::string out;
    for (size_t i = 0; i < in.size();) {
        if (in.compare(i, 8, "{region}") == 0) {
            out.append(region);
            i += 8;
        } else {
            out += in[i++];
        }
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::vector<std::string_view> l = fuzz::split_lines(fuzz::as_view(data, size), 2);
    std::string_view region = l[0], tmpl = l[1];

    std::string out = "left over", err, want;
    bool ok = expand_env(tmpl, env, out, err);
    Model m = model_env(tmpl, want);
    FUZZ_CHECK(ok == (m == Model::ok));
    if (ok) {
        FUZZ_CHECK(out == want);
    } else {
        FUZZ_CHECK(!err.empty());
        if (m == Model::unterminated && tmpl.find('\x01') != std::string_view::npos) {
            FUZZ_CHECK(err.find('\x01') == std::string::npos);
        }
    }
    if (tmpl.find("${") == std::string_view::npos) {
        FUZZ_CHECK(ok && out == tmpl);
    }

    std::string_view expanded = ok ? std::string_view(out) : tmpl;
    std::string r = expand_region(expanded, region);
    FUZZ_CHECK(r == model_region(expanded, region));
    FUZZ_CHECK(expand_region(expanded, "{region}") == expanded);

    bool region_ok = !region.empty() && region.size() <= 32;
    for (char c : region) {
        region_ok = region_ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
    }
    FUZZ_CHECK(valid_region(region) == region_ok);

    RedisUrl url;
    std::string url_err;
    if (!parse_redis_url(r, url, url_err)) {
        FUZZ_CHECK(!url_err.empty());
    }
    return 0;
}
