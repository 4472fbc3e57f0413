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
        auto ends = [&n](const std::string &tail) {
            return n.size() > tail.size()
                   && n.compare(n.size() - tail.size(), tail.size(), tail) == 0;
        };
        switch (d.type) {
        case MetricType::counter: assert_true(ends("_total")); break;
        case MetricType::histogram:
        case MetricType::gauge_seconds: assert_true(ends("_seconds")); break;
        case MetricType::gauge:
            // a gauge has no _total, and a time is in seconds
            assert_false(ends("_total") || ends("_seconds") || ends("_ms"));
            break;
        }
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

MetricLabels pg_labels()
{
    MetricLabels l;
    std::string regional = metric_label("endpoint", "127.0.0.1:5432") + ","
                           + metric_label("role", "regional");
    l.of(MetricDim::pg_replica) = {regional};
    l.of(MetricDim::pg_endpoint) = {regional,
                                    metric_label("endpoint", "10.0.0.1:5432")
                                        + "," + metric_label("role", "primary")};
    l.of(MetricDim::lsn_wait).resize(kMetricLsnWaits);
    l.of(MetricDim::lsn_wait)[0] = metric_label("wait", "read") + ","
                                   + metric_label("outcome", "caught_up");
    l.of(MetricDim::lsn_wait)[6] = metric_label("wait", "write") + ","
                                   + metric_label("outcome", "positioned");
    l.of(MetricDim::location) = {metric_label("location", "_other"),
                                 metric_label("location", "/c/")};
    l.of(MetricDim::cache_tier) = {"", metric_label("tier", "redis"),
                                   metric_label("tier", "near")};
    return l;
}

// Gauges: TYPE gauge, a plain number, or seconds from microseconds.
void test_format_gauges(void **)
{
    std::vector<uint64_t> v(metrics_value_count(), 0);
    v[metric_index(Metric::pg_replica_lag)] = 2500000;      // 2.5 s
    v[metric_index(Metric::pg_replica_lag_bytes)] = 16777216;
    v[metric_index(Metric::pg_replica_up)] = 1;
    v[metric_index(Metric::near_used_bytes)] = 4096;
    std::string out;
    format_metrics(v.data(), pg_labels(), out);
    const std::string l = "endpoint=\"127.0.0.1:5432\",role=\"regional\"";
    assert_true(has_line(out, "# TYPE fly_edge_pg_replica_lag_seconds gauge"));
    assert_true(has_line(out, "fly_edge_pg_replica_lag_seconds{" + l + "} 2.5"));
    assert_true(has_line(out, "# TYPE fly_edge_pg_replica_lag_bytes gauge"));
    assert_true(has_line(out, "fly_edge_pg_replica_lag_bytes{" + l + "} 16777216"));
    assert_true(has_line(out, "fly_edge_pg_replica_up{" + l + "} 1"));
    assert_true(has_line(out, "# TYPE fly_edge_near_used_bytes gauge"));
    assert_true(has_line(out, "fly_edge_near_used_bytes 4096"));
    assert_true(has_line(out, "fly_edge_near_entries 0"));
    // the lag of the primary endpoint is not a series: one slot only
    assert_true(out.find("fly_edge_pg_replica_lag_seconds{endpoint=\"10.0.0.1")
                == std::string::npos);
    v[metric_index(Metric::pg_replica_lag)] = 0;
    out.clear();
    format_metrics(v.data(), pg_labels(), out);
    assert_true(has_line(out, "fly_edge_pg_replica_lag_seconds{" + l + "} 0"));
    // no fly_postgres: the families are there, without samples
    out.clear();
    format_metrics(v.data(), some_labels(), out);
    assert_true(has_line(out, "# TYPE fly_edge_pg_replica_lag_seconds gauge"));
    assert_true(out.find("fly_edge_pg_replica_lag_seconds{") == std::string::npos);
    assert_true(out.find("fly_edge_pg_position_polls_total{") == std::string::npos);
}

// Polls by endpoint, waits by outcome (a counter and a histogram), HITs
// by location and tier.
void test_format_pg_and_tiers(void **)
{
    std::vector<uint64_t> v(metrics_value_count(), 0);
    v[metric_index(Metric::pg_polls, 0)] = 10;
    v[metric_index(Metric::pg_polls, 1)] = 9;
    v[metric_index(Metric::pg_poll_failures, 1)] = 2;
    v[metric_index(Metric::lsn_waits, 0)] = 3;
    v[metric_index(Metric::lsn_waits, 6)] = 1;
    v[metric_index(Metric::lsn_waits, 1)] = 5;    // no label: not shown
    size_t at = metric_index(Metric::lsn_wait_time, 0);
    v[at + histogram_bucket(20000)] += 3;         // le 0.025
    v[at + kHistogramBuckets + 1] = 60000;
    v[metric_index(Metric::cache_tier_hits, 1, 2)] = 4;
    v[metric_index(Metric::cache_tier_hits, 1, 1)] = 6;
    std::string out;
    format_metrics(v.data(), pg_labels(), out);
    assert_true(has_line(out, "# TYPE fly_edge_pg_position_polls_total counter"));
    assert_true(has_line(out, "fly_edge_pg_position_polls_total{endpoint=\"127.0.0.1:5432\",role=\"regional\"} 10"));
    assert_true(has_line(out, "fly_edge_pg_position_polls_total{endpoint=\"10.0.0.1:5432\",role=\"primary\"} 9"));
    assert_true(has_line(out, "fly_edge_pg_position_poll_failures_total{endpoint=\"10.0.0.1:5432\",role=\"primary\"} 2"));
    const std::string r = "wait=\"read\",outcome=\"caught_up\"";
    assert_true(has_line(out, "fly_edge_lsn_waits_total{" + r + "} 3"));
    assert_true(has_line(out, "fly_edge_lsn_waits_total{wait=\"write\",outcome=\"positioned\"} 1"));
    assert_true(out.find(" 5\n") == std::string::npos);
    assert_true(has_line(out, "# TYPE fly_edge_lsn_wait_seconds histogram"));
    assert_true(has_line(out, "fly_edge_lsn_wait_seconds_bucket{" + r + ",le=\"0.01\"} 0"));
    assert_true(has_line(out, "fly_edge_lsn_wait_seconds_bucket{" + r + ",le=\"0.025\"} 3"));
    assert_true(has_line(out, "fly_edge_lsn_wait_seconds_sum{" + r + "} 0.06"));
    assert_true(has_line(out, "fly_edge_lsn_wait_seconds_count{" + r + "} 3"));
    assert_true(has_line(out, "fly_edge_cache_tier_hits_total{location=\"/c/\",tier=\"near\"} 4"));
    assert_true(has_line(out, "fly_edge_cache_tier_hits_total{location=\"/c/\",tier=\"redis\"} 6"));
    assert_true(has_line(out, "fly_edge_cache_tier_hits_total{location=\"_other\",tier=\"near\"} 0"));
    // tier slot 0 (none) has no label: never a series
    assert_true(out.find("fly_edge_cache_tier_hits_total{location=\"/c/\"}") == std::string::npos);
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
        cmocka_unit_test(test_format_gauges),
        cmocka_unit_test(test_format_pg_and_tiers),
        cmocka_unit_test(test_layout_hash_stable),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
