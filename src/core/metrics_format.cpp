// fly-edge core: the metric table's layout and the Prometheus text format.
#include "core/metrics_format.hpp"

#include <cstdio>

namespace fly::core {

namespace {

constexpr MetricDesc kDescs[] = {
#define FLY_METRIC_DESC(id, name, type, d1, d2, help) \
    {name, MetricType::type, MetricDim::d1, MetricDim::d2, help},
    FLY_METRICS(FLY_METRIC_DESC)
#undef FLY_METRIC_DESC
};

static_assert(sizeof(kDescs) / sizeof(kDescs[0])
                  == static_cast<size_t>(Metric::count_),
              "one descriptor per metric");

size_t series_values(const MetricDesc &d)
{
    return d.type == MetricType::histogram ? kHistogramValues : 1;
}

size_t series_count(const MetricDesc &d)
{
    return metric_dim_size(d.dim1) * metric_dim_size(d.dim2);
}

struct Offsets {
    size_t first[static_cast<size_t>(Metric::count_) + 1];

    Offsets() : first()
    {
        size_t n = 0;
        for (size_t i = 0; i < static_cast<size_t>(Metric::count_); i++) {
            first[i] = n;
            n += series_count(kDescs[i]) * series_values(kDescs[i]);
        }
        first[static_cast<size_t>(Metric::count_)] = n;
    }
};

const Offsets &offsets()
{
    static const Offsets o;
    return o;
}

void append_number(std::string &out, uint64_t v)
{
    char buf[24];
    int n = std::snprintf(buf, sizeof(buf), "%llu",
                          static_cast<unsigned long long>(v));
    out.append(buf, static_cast<size_t>(n));
}

// Seconds from microseconds, exact (no floating point on the way).
void append_seconds(std::string &out, uint64_t us)
{
    char buf[32];
    int n = std::snprintf(buf, sizeof(buf), "%llu.%06llu",
                          static_cast<unsigned long long>(us / 1000000),
                          static_cast<unsigned long long>(us % 1000000));
    std::string s(buf, static_cast<size_t>(n));
    while (s.back() == '0') {
        s.pop_back();
    }
    if (s.back() == '.') {
        s.pop_back();
    }
    out += s;
}

const std::string &label_of(const MetricLabels &labels, MetricDim d,
                            size_t i)
{
    static const std::string empty;
    if (d == MetricDim::none) {
        return empty;
    }
    const std::vector<std::string> &v = labels.of(d);
    return i < v.size() ? v[i] : empty;
}

void append_sample(std::string &out, const char *name, const char *suffix,
                   const std::string &l1, const std::string &l2,
                   const std::string &extra)
{
    out += name;
    out += suffix;
    if (!l1.empty() || !l2.empty() || !extra.empty()) {
        out += '{';
        bool first = true;
        for (const std::string *l : {&l1, &l2, &extra}) {
            if (l->empty()) {
                continue;
            }
            if (!first) {
                out += ',';
            }
            out += *l;
            first = false;
        }
        out += '}';
    }
    out += ' ';
}

void append_help(std::string &out, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\') {
            out += "\\\\";
        } else if (*p == '\n') {
            out += "\\n";
        } else {
            out += *p;
        }
    }
}

}  // namespace

const uint64_t kHistogramBoundsUs[kHistogramBuckets] = {
    100, 250, 500, 1000, 2500, 5000, 10000,
    25000, 50000, 100000, 250000, 500000, 1000000,
};

const MetricDesc &metric_desc(Metric m)
{
    return kDescs[static_cast<size_t>(m)];
}

size_t histogram_bucket(uint64_t us)
{
    for (size_t i = 0; i < kHistogramBuckets; i++) {
        if (us <= kHistogramBoundsUs[i]) {
            return i;
        }
    }
    return kHistogramBuckets;   // +Inf
}

size_t metric_index(Metric m, size_t i1, size_t i2)
{
    const MetricDesc &d = metric_desc(m);
    size_t n1 = metric_dim_size(d.dim1), n2 = metric_dim_size(d.dim2);
    if (i1 >= n1) {
        i1 = 0;
    }
    if (i2 >= n2) {
        i2 = 0;
    }
    return offsets().first[static_cast<size_t>(m)]
           + (i1 * n2 + i2) * series_values(d);
}

size_t metrics_value_count()
{
    return offsets().first[static_cast<size_t>(Metric::count_)];
}

uint64_t metrics_layout_hash()
{
    uint64_t h = 14695981039346656037ull;      // FNV-1a
    auto mix = [&h](uint64_t v) {
        for (int i = 0; i < 8; i++) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= 1099511628211ull;
        }
    };
    for (const MetricDesc &d : kDescs) {
        for (const char *p = d.name; *p; p++) {
            mix(static_cast<unsigned char>(*p));
        }
        mix(static_cast<uint64_t>(d.type));
        mix(metric_dim_size(d.dim1));
        mix(metric_dim_size(d.dim2));
    }
    for (uint64_t b : kHistogramBoundsUs) {
        mix(b);
    }
    mix(kMetricLocations);
    return h;
}

std::string metric_label(std::string_view name, std::string_view value)
{
    std::string out(name);
    out += "=\"";
    for (char c : value) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '"': out += "\\\""; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
    out += '"';
    return out;
}

void format_metrics(const uint64_t *values, const MetricLabels &labels,
                    std::string &out)
{
    for (size_t m = 0; m < static_cast<size_t>(Metric::count_); m++) {
        const MetricDesc &d = kDescs[m];
        bool hist = d.type == MetricType::histogram;
        out += "# HELP ";
        out += d.name;
        out += ' ';
        append_help(out, d.help);
        out += "\n# TYPE ";
        out += d.name;
        out += hist                             ? " histogram\n"
               : d.type == MetricType::counter ? " counter\n"
                                               : " gauge\n";

        size_t n1 = metric_dim_size(d.dim1), n2 = metric_dim_size(d.dim2);
        for (size_t i1 = 0; i1 < n1; i1++) {
            const std::string &l1 = label_of(labels, d.dim1, i1);
            if (d.dim1 != MetricDim::none && l1.empty()) {
                continue;
            }
            for (size_t i2 = 0; i2 < n2; i2++) {
                const std::string &l2 = label_of(labels, d.dim2, i2);
                if (d.dim2 != MetricDim::none && l2.empty()) {
                    continue;
                }
                const uint64_t *v = values
                                    + metric_index(static_cast<Metric>(m),
                                                   i1, i2);
                if (!hist) {
                    append_sample(out, d.name, "", l1, l2, std::string());
                    if (d.type == MetricType::gauge_seconds) {
                        append_seconds(out, v[0]);
                    } else {
                        append_number(out, v[0]);
                    }
                    out += '\n';
                    continue;
                }
                uint64_t cum = 0;
                for (size_t b = 0; b <= kHistogramBuckets; b++) {
                    cum += v[b];
                    std::string le;
                    if (b < kHistogramBuckets) {
                        le = "le=\"";
                        append_seconds(le, kHistogramBoundsUs[b]);
                        le += '"';
                    } else {
                        le = "le=\"+Inf\"";
                    }
                    append_sample(out, d.name, "_bucket", l1, l2, le);
                    append_number(out, cum);
                    out += '\n';
                }
                append_sample(out, d.name, "_sum", l1, l2, std::string());
                append_seconds(out, v[kHistogramBuckets + 1]);
                out += '\n';
                append_sample(out, d.name, "_count", l1, l2, std::string());
                append_number(out, cum);
                out += '\n';
            }
        }
    }
}

}  // namespace fly::core
