// Unit tests: the metric table's layout and the Prometheus text format.
#include "unit.hpp"

#include <set>
#include <vector>

#include "core/metrics_format.hpp"

using namespace fly::core;

namespace {

MetricLabels some_labels()
{
    MetricLabels l;
    l.of(MetricDim::location) = {metric_label("location", "_other"),
                                 metric_label("location", "/a\"b\\c\n")};
    l.of(MetricDim::cache_status).resize(kMetricCacheStatuses);
    l.of(MetricDim::cache_status)[1] = metric_label("status", "HIT");
    l.of(MetricDim::cache_status)[2] = metric_label("status", "MISS");
    l.of(MetricDim::endpoint) = {metric_label("endpoint", "127.0.0.1:6379")
                                 + "," + metric_label("role", "regional")};
    return l;
}

bool has_line(const std::string &out, const std::string &line)
{
    return out.find("\n" + line + "\n") != std::string::npos
           || out.compare(0, line.size() + 1, line + "\n") == 0;
}

// Every series of every metric has its own values, inside the array.
void test_layout_disjoint(void **)
{
    std::set<size_t> used;
    size_t total = metrics_value_count();
    for (size_t m = 0; m < static_cast<size_t>(Metric::count_); m++) {
        const MetricDesc &d = metric_desc(static_cast<Metric>(m));
        size_t per = d.type == MetricType::histogram ? kHistogramValues : 1;
        for (size_t i1 = 0; i1 < metric_dim_size(d.dim1); i1++) {
            for (size_t i2 = 0; i2 < metric_dim_size(d.dim2); i2++) {
                size_t at = metric_index(static_cast<Metric>(m), i1, i2);
                for (size_t k = 0; k < per; k++) {
                    assert_true(at + k < total);
                    assert_true(used.insert(at + k).second);
                }
            }
        }
    }
    assert_int_equal(used.size(), total);
    // out of range indexes fall back to slot 0, never outside
    assert_int_equal(metric_index(Metric::cache_requests, 100000, 3),
                     metric_index(Metric::cache_requests, 0, 3));
}

void test_names_follow_conventions(void **)
{
    std::set<std::string> names;
    for (size_t m = 0; m < static_cast<size_t>(Metric::count_); m++) {
        const MetricDesc &d = metric_desc(static_cast<Metric>(m));
        std::string n = d.name;
        assert_true(names.insert(n).second);
        assert_int_equal(n.compare(0, 9, "fly_edge_"), 0);
        std::string tail = d.type == MetricType::counter ? "_total" : "_seconds";
        assert_true(n.size() > tail.size()
                    && n.compare(n.size() - tail.size(), tail.size(), tail) == 0);
        for (char c : n) {
            assert_true((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
        }
    }
}

void test_histogram_buckets(void **)
{
    assert_int_equal(histogram_bucket(0), 0);
    assert_int_equal(histogram_bucket(100), 0);
    assert_int_equal(histogram_bucket(101), 1);
    assert_int_equal(histogram_bucket(1000000), kHistogramBuckets - 1);
    assert_int_equal(histogram_bucket(1000001), kHistogramBuckets);
    for (size_t i = 1; i < kHistogramBuckets; i++) {
        assert_true(kHistogramBoundsUs[i] > kHistogramBoundsUs[i - 1]);
    }
}

void test_label_escaping(void **)
{
    assert_sv_equal(metric_label("location", "/a\"b\\c\nd"),
                    "location=\"/a\\\"b\\\\c\\nd\"");
    assert_sv_equal(metric_label("status", "HIT"), "status=\"HIT\"");
}

void test_format_counters(void **)
{
    std::vector<uint64_t> v(metrics_value_count(), 0);
    v[metric_index(Metric::cache_requests, 1, 1)] = 7;
    v[metric_index(Metric::cache_requests, 1, 2)] = 3;
    v[metric_index(Metric::cache_requests, 5, 1)] = 99;   // no label: not shown
    v[metric_index(Metric::forwards)] = 2;
    v[metric_index(Metric::redis_commands, 0)] = 12;
    std::string out;
    format_metrics(v.data(), some_labels(), out);

    assert_true(has_line(out, "# TYPE fly_edge_cache_requests_total counter"));
    assert_true(has_line(out, "fly_edge_cache_requests_total{location=\"/a\\\"b\\\\c\\n\",status=\"HIT\"} 7"));
    assert_true(has_line(out, "fly_edge_cache_requests_total{location=\"/a\\\"b\\\\c\\n\",status=\"MISS\"} 3"));
    assert_true(has_line(out, "fly_edge_cache_requests_total{location=\"_other\",status=\"HIT\"} 0"));
    assert_true(out.find(" 99\n") == std::string::npos);
    assert_true(has_line(out, "fly_edge_forwards_total 2"));
    assert_true(has_line(out, "fly_edge_redis_commands_total{endpoint=\"127.0.0.1:6379\",role=\"regional\"} 12"));
    // replays: no state labels given, the family has no samples
    assert_true(has_line(out, "# TYPE fly_edge_replays_total counter"));
    assert_true(out.find("fly_edge_replays_total{") == std::string::npos);
    assert_true(out.find("# HELP fly_edge_cache_requests_total ") != std::string::npos);
    assert_true(out.back() == '\n');
}

void test_format_histogram(void **)
{
    std::vector<uint64_t> v(metrics_value_count(), 0);
    size_t at = metric_index(Metric::redis_round_trip, 0);
    v[at + histogram_bucket(80)] += 1;          // 0.0001
    v[at + histogram_bucket(700)] += 2;         // 0.001
    v[at + histogram_bucket(5000000)] += 1;     // +Inf
    v[at + kHistogramBuckets + 1] = 80 + 1400 + 5000000;
    std::string out;
    format_metrics(v.data(), some_labels(), out);
    const std::string l = "endpoint=\"127.0.0.1:6379\",role=\"regional\"";
    assert_true(has_line(out, "# TYPE fly_edge_redis_round_trip_seconds histogram"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_bucket{" + l + ",le=\"0.0001\"} 1"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_bucket{" + l + ",le=\"0.00025\"} 1"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_bucket{" + l + ",le=\"0.001\"} 3"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_bucket{" + l + ",le=\"1\"} 3"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_bucket{" + l + ",le=\"+Inf\"} 4"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_sum{" + l + "} 5.00148"));
    assert_true(has_line(out, "fly_edge_redis_round_trip_seconds_count{" + l + "} 4"));
}

void test_layout_hash_stable(void **)
{
    assert_true(metrics_layout_hash() == metrics_layout_hash());
    assert_true(metrics_layout_hash() != 0);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_disjoint),
        cmocka_unit_test(test_names_follow_conventions),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_format_counters),
        cmocka_unit_test(test_format_histogram),
        cmocka_unit_test(test_layout_hash_stable),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
