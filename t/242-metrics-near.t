# fly_status and the near cache (issue 11, issue 12): HITs counted by the
# tier that answered them (fly_edge_cache_tier_hits_total, summing to the
# HITs of fly_edge_cache_requests_total), over both workers; the zone's
# inserts, entries and bytes, its evictions when it is too small, and the
# invalidations it receives from Redis; the output parses strictly.
# Everything is read in atl (a replica region); a write in scl sends the
# invalidation.  Timing: events only (tiers, counts), every wait a scaled poll.
use FlyEdge::Test;
use FlyEdge::Near;
use FlyEdge::Prom qw(parse value sum_of);

our $TIMEOUT = int(scaled(2) * 1000);

sub http_config {
    my ($zone) = @_;
    return <<"EOF" . ($zone // "fly_cache_near_zone 8m;\n");
fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";
fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";
fly_redis_timeout ${TIMEOUT}ms;
fly_redis_connect_timeout ${TIMEOUT}ms;
EOF
}

our $CACHE = <<'EOF';
location /c/ {
    fly_cache on;
    fly_cache_status_header X-Cache;
    add_header X-Tier "$fly_cache_tier" always;
    add_header X-Worker $pid always;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
location = /metrics { fly_status; }
EOF

sub cc { "Cache-Control=max-age%3D$_[0]" }
sub key_of { "fly:http$FlyEdge::Near::HOST$_[0]" }

# A parsed scrape of a region's /metrics (dies when it does not parse).
sub scrape {
    my ($r) = @_;
    my $res = send_request(path => '/metrics', region => $r // 'atl', direct => 1,
                           ua => FlyEdge::Test::UA->new(timeout => scaled(10), keep_alive => 0));
    die "GET /metrics: $res->{status}\n" unless $res->{status} == 200;
    my $p = parse($res->{content});
    die "the metrics do not parse:\n" . join("\n", @{$p->{errors}}) . "\n" if @{$p->{errors}};
    return $p;
}

# Polls until the condition holds on a scrape of atl; returns the last one.
sub settle {
    my ($cond) = @_;
    my $p;
    topology()->wait_until(sub { $p = scrape('atl'); $cond->($p) }, scaled(5));
    return $p;
}

sub tier_hits { value($_[0], 'fly_edge_cache_tier_hits_total', { location => '/c/', tier => $_[1] }) }
sub hits { value($_[0], 'fly_edge_cache_requests_total', { location => '/c/', status => 'HIT' }) }

run_tests(pg => 0);

__DATA__

=== TEST 1: the near families: gauges and counters, typed, with a tier label on the HITs
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $p = main::scrape('atl');
for my $f (qw(fly_edge_near_inserts_total fly_edge_near_evictions_total fly_edge_near_invalidations_total
              fly_edge_near_store_failures_total fly_edge_near_invalidation_keys_received_total
              fly_edge_cache_tier_hits_total)) {
    is($p->{families}{$f}{type}, 'counter', "$f is a counter");
}
is($p->{families}{$_}{type}, 'gauge', "$_ is a gauge") for qw(fly_edge_near_entries fly_edge_near_used_bytes);
for my $tier (qw(near redis)) {
    ok(exists $p->{series}{FlyEdge::Prom::series_key('fly_edge_cache_tier_hits_total', { location => '/c/', tier => $tier })},
       "a series for tier $tier");
}
ok(!grep({ /^fly_edge_cache_tier_hits_total\{location="\/c\/"\}/ } keys %{$p->{series}}), 'none without a tier');


=== TEST 2: HITs by tier over both workers: a Redis HIT enters the zone (an insert), then HITs from the zone; tiers sum to the HITs
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $before = main::scrape('atl');
my $path = '/c/bin?size=3000&t=2&' . main::cc(300);
my $m = near_get($path);
is(cache_of($m), 'MISS', 'first: MISS');
ok($t->wait_until(sub { defined $t->redis('atl')->get(main::key_of($path)) }, scaled(5)), 'stored in Redis');
my %tiers;       # what the answers said, HITs only
my %by;          # HITs from the zone by worker
my $count = sub { my ($r) = @_; $tiers{tier($r)}++ if $r->{status} == 200 && cache_of($r) eq 'HIT'; tier($r) };
ok($t->wait_until(sub { $count->(near_get($path)) eq 'near' }, scaled(10)), 'a Redis HIT, then one from the zone');
ok($t->wait_until(sub {
    for my $r (FlyEdge::Test::parallel_get([($path) x 8], region => 'atl', host => $FlyEdge::Near::HOST)) {
        $by{$r->{headers}{'x-worker'}}++ if $count->($r) eq 'near';
    }
    return keys(%by) >= 2;
}, scaled(10)), 'HITs from the zone came from both workers') or diag(join ' ', map { "$_=$by{$_}" } sort keys %by);
Test::More::note('HITs by tier: ' . join(', ', map { "$_=$tiers{$_}" } sort keys %tiers));
ok(($tiers{redis} // 0) >= 1, 'at least one Redis HIT');
ok(($tiers{near} // 0) >= 2, 'HITs from the zone');
is_deeply([grep { $_ ne 'near' && $_ ne 'redis' } keys %tiers], [], 'every HIT has a tier');
my $d = sub { my ($p, $tier) = @_; main::tier_hits($p, $tier) - main::tier_hits($before, $tier) };
my $p = main::settle(sub { $d->($_[0], 'near') == ($tiers{near} // 0) && $d->($_[0], 'redis') == ($tiers{redis} // 0) });
is($d->($p, 'near'), $tiers{near} // 0, 'tier="near": every HIT from the zone, both workers\' in one count');
is($d->($p, 'redis'), $tiers{redis} // 0, 'tier="redis": every Redis HIT');
is(main::hits($p) - main::hits($before), ($tiers{near} // 0) + ($tiers{redis} // 0), 'the tiers sum to the HITs');
my $dv = sub { value($p, $_[0]) - value($before, $_[0]) };
cmp_ok($dv->('fly_edge_near_inserts_total'), '>=', 1, 'the entry was inserted into the zone: ' . $dv->('fly_edge_near_inserts_total'));
cmp_ok(value($p, 'fly_edge_near_entries'), '>=', 1, 'the zone holds entries: ' . value($p, 'fly_edge_near_entries'));
cmp_ok(value($p, 'fly_edge_near_used_bytes'), '>=', 3000, 'and at least the body\'s bytes: ' . value($p, 'fly_edge_near_used_bytes'));
is($dv->('fly_edge_near_evictions_total'), 0, 'no eviction in a large zone');


=== TEST 3: a write in scl: atl receives the invalidation and its zone drops the entry (both counted); the next HIT is Redis's
--- http_config eval: main::http_config()
--- config eval: $main::CACHE
--- test
my $path = '/c/bin?size=2000&t=3&' . main::cc(300);
near_get($path);
ok($t->wait_until(sub { defined $t->redis('atl')->get(main::key_of($path)) }, scaled(5)), 'stored in Redis');
until_near($path);
my $before = main::scrape('atl');
my $w = near_get($path, method => 'POST', region => 'scl');
is($w->{status}, 200, 'a write in scl');
my $dv = sub { value($_[0], $_[1]) - value($before, $_[1]) };
my $p = main::settle(sub { $dv->($_[0], 'fly_edge_near_invalidations_total') >= 1 });
cmp_ok($dv->($p, 'fly_edge_near_invalidation_keys_received_total'), '>=', 1,
       'atl received the invalidation: ' . $dv->($p, 'fly_edge_near_invalidation_keys_received_total') . ' key(s)');
cmp_ok($dv->($p, 'fly_edge_near_invalidations_total'), '>=', 1,
       'and dropped the entry: ' . $dv->($p, 'fly_edge_near_invalidations_total'));
my $r;
ok($t->wait_until(sub { $r = near_get($path); tier($r) ne 'near' }, scaled(5)), 'atl stops serving it from the zone');


=== TEST 4: a zone too small for every entry: evictions counted, the zone's bytes stay within it
--- http_config eval: main::http_config("fly_cache_near_zone 256k;\n")
--- config eval: $main::CACHE
--- test
my $before = main::scrape('atl');
# 40 entries of 10 KiB: three times what the zone holds; each read from
# Redis (a HIT) enters the zone, evicting the oldest
my @p = map { "/c/bin?size=10000&t=4&k=$_&" . main::cc(300) } 1 .. 40;
my $bad = 0;
for my $p (@p) { $bad++ unless near_get($p)->{status} == 200 }
for my $p (@p) { for (1 .. 2) { $bad++ unless near_get($p)->{status} == 200 } }
is($bad, 0, 'all 120 answers are 200');
my $dv = sub { value($_[0], $_[1]) - value($before, $_[1]) };
my $p = main::settle(sub { $dv->($_[0], 'fly_edge_near_evictions_total') >= 1 });
cmp_ok($dv->($p, 'fly_edge_near_evictions_total'), '>=', 1, 'evictions: ' . $dv->($p, 'fly_edge_near_evictions_total'));
cmp_ok($dv->($p, 'fly_edge_near_inserts_total'), '>', $dv->($p, 'fly_edge_near_evictions_total') - 1,
       'inserts: ' . $dv->($p, 'fly_edge_near_inserts_total'));
cmp_ok(value($p, 'fly_edge_near_used_bytes'), '<=', 256 * 1024, 'the entries take at most the zone: ' . value($p, 'fly_edge_near_used_bytes'));
cmp_ok(value($p, 'fly_edge_near_entries'), '<', 40, 'fewer entries than were stored: ' . value($p, 'fly_edge_near_entries'));
--- no_error_log_atl
[crit]
[alert]
