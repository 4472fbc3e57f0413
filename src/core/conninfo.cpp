// fly-edge pure core: PostgreSQL connection settings (conninfo.hpp).
#include "core/conninfo.hpp"
#include "core/http_text.hpp"
#include "core/url.hpp"

#include <algorithm>

namespace fly::core {

namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix)
{
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// password=... values of a URI's query.
void query_secrets(std::string_view query, std::vector<std::string> &out)
{
    while (!query.empty()) {
        size_t amp = query.find('&');
        std::string_view kv = query.substr(0, amp);
        size_t eq = kv.find('=');
        if (eq != std::string_view::npos && kv.substr(0, eq) == "password") {
            out.emplace_back(kv.substr(eq + 1));
        }
        if (amp == std::string_view::npos) {
            break;
        }
        query.remove_prefix(amp + 1);
    }
}

}  // namespace

const std::string *conn_param(const ConnParams &params, std::string_view key)
{
    const std::string *v = nullptr;
    for (const ConnParam &p : params) {
        if (p.key == key) {
            v = &p.value;
        }
    }
    return v;
}

void set_conn_param(ConnParams &params, std::string_view key,
                    std::string_view value)
{
    for (ConnParam &p : params) {
        if (p.key == key) {
            p.value.assign(value);
            return;
        }
    }
    params.push_back({std::string(key), std::string(value)});
}

bool to_leader_port(ConnParams &params)
{
    bool changed = false;
    for (ConnParam &p : params) {
        if (p.key != "port") {
            continue;
        }
        std::string out;
        size_t i = 0;
        while (i <= p.value.size()) {
            size_t comma = p.value.find(',', i);
            if (comma == std::string::npos) {
                comma = p.value.size();
            }
            std::string_view e(p.value.data() + i, comma - i);
            if (trim_ows(e) == "5433") {
                e = "5432";
                changed = true;
            }
            out.append(e);
            if (comma < p.value.size()) {
                out.push_back(',');
            }
            i = comma + 1;
        }
        p.value = out;
    }
    return changed;
}

bool pg_endpoint(const ConnParams &params, PgEndpoint &out, std::string &err)
{
    out = PgEndpoint();
    const std::string *host = conn_param(params, "host");
    const std::string *addr = conn_param(params, "hostaddr");
    const std::string *port = conn_param(params, "port");

    if (addr != nullptr && !addr->empty()) {
        if (addr->find(',') != std::string::npos) {
            err = "a list of host addresses is not supported: give one hostaddr";
            return false;
        }
        out.hostaddr = *addr;
    }
    if (host != nullptr && !host->empty()) {
        if (host->find(',') != std::string::npos) {
            err = "a list of hosts is not supported: give one host";
            return false;
        }
        if ((*host)[0] == '/' || (*host)[0] == '@') {
            err = "a Unix-domain socket is not supported: give a host name "
                  "or an address";
            return false;
        }
        out.host = *host;
    } else if (out.hostaddr.empty()) {
        err = "no host: give host= (a name or an address) or hostaddr=";
        return false;
    } else {
        out.host = out.hostaddr;
    }

    if (port != nullptr && !port->empty()) {
        if (port->find(',') != std::string::npos) {
            err = "a list of ports is not supported: give one port";
            return false;
        }
        std::string_view p = trim_ows(*port);
        uint32_t n = 0;
        bool ok = !p.empty() && p.size() <= 5;
        for (char c : p) {
            ok = ok && is_digit(c);
            n = n * 10 + static_cast<uint32_t>(c - '0');
        }
        if (!ok || n == 0 || n > 65535) {
            err = "invalid port \"" + *port + "\"";
            return false;
        }
        out.port = static_cast<uint16_t>(n);
    }
    return true;
}

std::string redact_conninfo(std::string_view message, std::string_view conninfo)
{
    std::vector<std::string> secrets;
    std::string_view rest = conninfo;
    if (starts_with_nocase(rest, "postgresql://")
        || starts_with_nocase(rest, "postgres://"))
    {
        rest.remove_prefix(rest.find("//") + 2);
        size_t q = rest.find('?');
        std::string_view query = q == std::string_view::npos
                                     ? std::string_view() : rest.substr(q + 1);
        std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
        size_t at = authority.rfind('@');
        if (at != std::string_view::npos) {
            std::string_view userinfo = authority.substr(0, at);
            size_t colon = userinfo.find(':');
            if (colon != std::string_view::npos) {
                secrets.emplace_back(userinfo.substr(colon + 1));
            }
        }
        query_secrets(query, secrets);
    } else {
        // key = value pairs; a value is a word or 'quoted' (\' and \\).
        size_t i = 0;
        while ((i = conninfo.find("password", i)) != std::string_view::npos) {
            size_t j = i + 8;
            while (j < conninfo.size() && (conninfo[j] == ' ' || conninfo[j] == '\t')) {
                j++;
            }
            i = j;
            if (j >= conninfo.size() || conninfo[j] != '=') {
                continue;
            }
            j++;
            while (j < conninfo.size() && (conninfo[j] == ' ' || conninfo[j] == '\t')) {
                j++;
            }
            std::string raw, value;
            if (j < conninfo.size() && conninfo[j] == '\'') {
                j++;
                while (j < conninfo.size() && conninfo[j] != '\'') {
                    if (conninfo[j] == '\\' && j + 1 < conninfo.size()) {
                        raw.push_back(conninfo[j]);
                        j++;
                    }
                    raw.push_back(conninfo[j]);
                    value.push_back(conninfo[j]);
                    j++;
                }
            } else {
                while (j < conninfo.size() && conninfo[j] != ' '
                       && conninfo[j] != '\t' && conninfo[j] != '\n')
                {
                    raw.push_back(conninfo[j]);
                    j++;
                }
                value = raw;
            }
            secrets.push_back(raw);
            secrets.push_back(value);
            i = j;
        }
    }

    size_t n = secrets.size();
    for (size_t k = 0; k < n; k++) {
        std::string d;
        if (percent_decode(secrets[k], d) && d != secrets[k]) {
            secrets.push_back(d);
        }
    }

    // Longest first: a password that holds another is not left half shown.
    std::sort(secrets.begin(), secrets.end(),
              [](const std::string &a, const std::string &b) {
                  return a.size() > b.size();
              });
    std::string out(message);
    for (const std::string &s : secrets) {
        if (s.empty()) {
            continue;
        }
        size_t pos = 0;
        while ((pos = out.find(s, pos)) != std::string::npos) {
            out.replace(pos, s.size(), "***");
            pos += 3;
        }
    }
    return out;
}

}  // namespace fly::core
