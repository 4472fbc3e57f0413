# fly_status: the Prometheus endpoint.  Counters move as a scripted
# sequence of hits, misses, bypasses, replays, forwards, refusals,
# invalidations and Redis outages says, summed over both workers, and
# survive a reload; the output parses with a strict text-format parser.
# The PostgreSQL and LSN-wait families: t/241; the near cache's: t/242.
use FlyEdge::Test;
use FlyEdge::Prom qw(parse value sum_of series_key);

# Redis's timeouts guard against a hang (and are what TEST 6 waits for):
# generous and scaled.  Connecting may take longer than a command: a
# command held by a connection to a hung Redis times out (TEST 6) before
# the connection does.
our $TIMEOUT_MS = scaled(2) * 1000;
our $CONNECT_MS = 5 * $TIMEOUT_MS;
our $HTTP = <<"EOF";
fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";
fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";
fly_redis_timeout ${TIMEOUT_MS}ms;
fly_redis_connect_timeout ${CONNECT_MS}ms;
fly_replay on;
EOF

our $CONFIG = <<'EOF';
location /cached/ {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_bypass $http_x_bypass;
    fly_cache_purge PURGE;
    add_header X-Worker $pid always;
    proxy_set_header Host $host;
    proxy_pass http://app/;
}
location /fwd/ { fly_replay_forward @primary; proxy_pass http://app/; }
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
location = /metrics { fly_status; }
location / { proxy_pass http://app; }
EOF

our @FAMILIES = qw(
    fly_edge_cache_requests_total fly_edge_cache_served_bytes_total
    fly_edge_cache_invalidations_total fly_edge_cache_purges_total fly_edge_replays_total
    fly_edge_replay_refusals_total fly_edge_forwards_total
    fly_edge_redis_commands_total fly_edge_redis_errors_total
    fly_edge_redis_timeouts_total fly_edge_redis_reconnects_total
    fly_edge_redis_round_trip_seconds
    fly_edge_cache_tier_hits_total fly_edge_near_inserts_total fly_edge_near_evictions_total
    fly_edge_near_invalidations_total fly_edge_near_store_failures_total
    fly_edge_near_invalidation_keys_received_total fly_edge_near_entries fly_edge_near_used_bytes
    fly_edge_pg_position_polls_total fly_edge_pg_position_poll_failures_total fly_edge_pg_replica_up
    fly_edge_pg_replica_lag_seconds fly_edge_pg_replica_lag_bytes
    fly_edge_lsn_waits_total fly_edge_lsn_wait_seconds
);
# gauges (the rest: counters and histograms); t/241 and t/242 test their values
our @GAUGES = qw(fly_edge_near_entries fly_edge_near_used_bytes fly_edge_pg_replica_up
                 fly_edge_pg_replica_lag_seconds fly_edge_pg_replica_lag_bytes);

# A parsed scrape of a region's /metrics (dies when it does not parse).
sub scrape {
    my ($r) = @_;
    my $res = send_request(path => '/metrics', region => $r, direct => 1, ua => fresh_ua());
    die "GET /metrics in $r: $res->{status}\n" unless $res->{status} == 200;
    my $p = parse($res->{content});
    die "the metrics of $r do not parse:\n" . join("\n", @{$p->{errors}}) . "\n" if @{$p->{errors}};
    $p->{text} = $res->{content};
    return $p;
}

# A fresh connection per request, so both workers take part.
sub fresh_ua { FlyEdge::Test::UA->new(timeout => scaled(10), keep_alive => 0, max_redirect => 0) }

sub cached {
    my ($path, $r, %h) = @_;
    return send_request(path => "/cached$path", region => $r, direct => 1, ua => fresh_ua(),
                        headers => { Host => 'metrics.test', %h });
}

# Waits until the fill of a MISS is in the region's Redis (it is written as
# the response streams: a request on another connection may come first).
sub filled {
    my ($r, $tag) = @_;
    topology()->wait_until(sub { scalar(grep { /\Q$tag\E/ } topology()->redis_cli($r, 'KEYS', 'fly:*')) }, scaled(5))
        or die "the fill of $tag did not reach Redis in $r\n";
}

sub req_count {
    my ($p, $status, $loc) = @_;
    return value($p, 'fly_edge_cache_requests_total', { location => $loc // '/cached/', status => $status });
}

# Polls until the condition holds (the log phase counts a request just
# after its last byte went out, maybe in the other worker); returns the
# last scrape.
sub settle {
    my ($r, $cond) = @_;
    my $p;
    topology()->wait_until(sub { $p = scrape($r); $cond->($p) }, scaled(5));
    return $p;
}

our %SAVED;     # what a block leaves for a later one

run_tests();

__DATA__

=== TEST 1: text format 0.0.4, every family with HELP and TYPE, the labels known at configuration time
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
$res = send_request(path => '/metrics', region => 'atl', direct => 1);
is($res->{status}, 200, 'GET /metrics');
is($res->{headers}{'content-type'}, 'text/plain; version=0.0.4', 'the text format content type');
my $p = parse($res->{content});
is_deeply($p->{errors}, [], 'it parses strictly') or diag($res->{content});
is_deeply([sort @{$p->{order}}], [sort @main::FAMILIES], 'the families');
is($p->{families}{fly_edge_redis_round_trip_seconds}{type}, 'histogram', 'the round trip is a histogram');
is($p->{families}{$_}{type}, 'counter', "$_ is a counter") for grep { /_total$/ } @main::FAMILIES;
is($p->{families}{$_}{type}, 'gauge', "$_ is a gauge") for @main::GAUGES;
is($p->{families}{fly_edge_lsn_wait_seconds}{type}, 'histogram', 'the LSN wait time is a histogram');
ok(!grep({ /^fly_edge_pg_/ } keys %{$p->{series}}), 'without fly_postgres: no PostgreSQL series');
for my $s (qw(HIT MISS BYPASS EXPIRED ERROR STALE UPDATING REVALIDATED)) {
    ok(exists $p->{series}{series_key('fly_edge_cache_requests_total', { location => '/cached/', status => $s })},
       "a series for status $s of location /cached/");
}
ok(exists $p->{series}{series_key('fly_edge_cache_requests_total', { location => '_other', status => 'HIT' })}, 'and for _other');
ok(!grep({ /location="\/fwd\/"/ } keys %{$p->{series}}), 'no series for a location without fly_cache');
for my $st (qw(always method when sticky captured lsn lag other)) {
    ok(exists $p->{series}{series_key('fly_edge_replays_total', { state => $st })}, "replays with state=$st");
}
my $atl = '127.0.0.1:' . $t->redis_port('atl');
my $scl = '127.0.0.1:' . $t->redis_port('scl');
ok(exists $p->{series}{series_key('fly_edge_redis_commands_total', { endpoint => $atl, role => 'regional' })}, 'atl: its regional Redis');
ok(exists $p->{series}{series_key('fly_edge_redis_commands_total', { endpoint => $scl, role => 'primary' })}, 'atl: the primary Redis');
my $ps = main::scrape('scl');
ok(exists $ps->{series}{series_key('fly_edge_redis_commands_total', { endpoint => $scl, role => 'regional' })}, 'scl: one endpoint');
ok(!grep({ /role="primary"/ } keys %{$ps->{series}}), 'scl: no second role for the same connection');
my $head = send_request(method => 'HEAD', path => '/metrics', region => 'atl', direct => 1);
is($head->{status}, 200, 'HEAD');
is($head->{content}, '', 'without a body');
my $post = send_request(method => 'POST', path => '/metrics', region => 'scl', direct => 1, body => 'x');
is($post->{status}, 405, 'POST: 405');


=== TEST 2: misses, hits and bypasses, counted once each over both workers; bytes served from the cache
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
is(scalar(() = $t->nginx_worker_pids('atl')), 2, 'atl runs two workers');
my $before = main::scrape('atl');
my $tag = 't=' . int(rand(1e9));
my $path = "/hdr?$tag&body=hello-metrics&Cache-Control=max-age%3D300";
my (%xc, %pids, $hit_bytes);
for my $i (1 .. 24) {
    main::filled('atl', $tag) if $i == 2;
    my $res = main::cached($path, 'atl', $i % 6 == 0 ? ('X-Bypass' => 1) : ());
    is($res->{status}, 200, "request $i") or next;
    $xc{$res->{headers}{'x-cache'} // ''}++;
    $pids{$res->{headers}{'x-worker'} // '?'}++;
    $hit_bytes += length $res->{content} if ($res->{headers}{'x-cache'} // '') eq 'HIT';
}
Test::More::note('X-Cache: ' . join(', ', map { "$_=$xc{$_}" } sort keys %xc) . '; workers: ' . join(', ', map { "$_=$pids{$_}" } sort keys %pids));
is($xc{MISS}, 1, 'one MISS');
is($xc{BYPASS}, 4, 'four BYPASS');
ok(($xc{HIT} // 0) >= 15, 'the rest HIT') or diag(join(", ", map { "$_=$xc{$_}" } sort keys %xc));
my $want = sub { my ($p) = @_; !grep { main::req_count($p, $_) - main::req_count($before, $_) != ($xc{$_} // 0) } qw(HIT MISS BYPASS ERROR) };
my $p = main::settle('atl', $want);
for my $s (qw(HIT MISS BYPASS ERROR EXPIRED)) {
    is(main::req_count($p, $s) - main::req_count($before, $s), $xc{$s} // 0, "requests with status $s");
}
my $bytes = sub { value($_[0], 'fly_edge_cache_served_bytes_total', { location => '/cached/' }) };
is($bytes->($p) - $bytes->($before), $hit_bytes, "bytes served from the cache: $hit_bytes");
my $ep = { endpoint => '127.0.0.1:' . $t->redis_port('atl'), role => 'regional' };
my $cmds = value($p, 'fly_edge_redis_commands_total', $ep) - value($before, 'fly_edge_redis_commands_total', $ep);
ok($cmds >= ($xc{HIT} // 0) + ($xc{MISS} // 0), "Redis commands: $cmds, at least one per lookup");
my $rtt = value($p, 'fly_edge_redis_round_trip_seconds_count', $ep) - value($before, 'fly_edge_redis_round_trip_seconds_count', $ep);
ok($rtt >= ($xc{HIT} // 0), "round trips measured: $rtt");
ok(value($p, 'fly_edge_redis_round_trip_seconds_sum', $ep) > value($before, 'fly_edge_redis_round_trip_seconds_sum', $ep), 'their sum grows');
SKIP: {
    skip('every request went to one worker', 1) if keys %pids < 2;
    pass('the requests of both workers were counted in the one zone: ' . join(', ', sort keys %pids));
}
$main::SAVED{pids} = [sort $t->nginx_worker_pids('atl')];
$main::SAVED{hits} = main::req_count($p, 'HIT');


=== TEST 3: replays by state, forwards and refusals, in the region that answers them
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
my $before = main::scrape('atl');
my $w = send_request(method => 'POST', path => '/echo', region => 'atl', body => 'x');
is($w->{status}, 200, 'a POST near atl');
is($w->{headers}{'fly-emulator-route'}, 'atl>scl', 'replayed to scl');
my $f = send_request(method => 'POST', path => '/fwd/echo', region => 'atl', direct => 1, body => 'chunk' x 100, chunked => 1);
is($f->{status}, 200, 'a chunked POST is forwarded');
is($f->{headers}{'x-app-region'}, 'scl', 'to scl');
my $n = send_request(method => 'POST', path => '/echo', region => 'atl', direct => 1, body => 'chunk' x 100, chunked => 1);
is($n->{status}, 411, 'without fly_replay_forward: 411');
my $d = sub { my ($p, $name, $l) = @_; value($p, $name, $l) - value($before, $name, $l) };
my $p = main::settle('atl', sub {
    $d->($_[0], 'fly_edge_replays_total', { state => 'method' }) == 1
    && $d->($_[0], 'fly_edge_forwards_total') == 1
    && $d->($_[0], 'fly_edge_replay_refusals_total', { reason => 'no_length' }) == 1 });
is($d->($p, 'fly_edge_replays_total', { state => 'method' }), 1, 'one replay with state=method');
is($d->($p, 'fly_edge_forwards_total'), 1, 'one forward');
is($d->($p, 'fly_edge_replay_refusals_total', { reason => 'no_length' }), 1, 'one refusal: no_length');
is($d->($p, 'fly_edge_replay_refusals_total', { reason => 'too_large' }), 0, 'none too_large');
is(sum_of($p, 'fly_edge_replays_total') - sum_of($before, 'fly_edge_replays_total'), 1, 'no replay of another state');
$main::SAVED{replays} = value($p, 'fly_edge_replays_total', { state => 'method' });


=== TEST 4: a successful write in the primary invalidates, and is counted there
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
my $before = main::scrape('scl');
my $path = '/hdr?t=' . int(rand(1e9)) . '&Cache-Control=max-age%3D300';
my $w = send_request(method => 'POST', path => "/cached$path", region => 'scl', direct => 1, body => 'x',
                     headers => { Host => 'metrics.test' });
is($w->{status}, 200, 'the write succeeds');
my $inv = sub { value($_[0], 'fly_edge_cache_invalidations_total') - value($before, 'fly_edge_cache_invalidations_total') };
my $p = main::settle('scl', sub { $inv->($_[0]) == 1 });
is($inv->($p), 1, 'one invalidation');
my $r = main::cached($path, 'scl');
is($r->{status}, 200, 'a read');
$p = main::settle('scl', sub { main::req_count($_[0], 'MISS') > main::req_count($before, 'MISS') });
is($inv->($p), 1, 'invalidates nothing');
my $purges = sub { value($_[0], 'fly_edge_cache_purges_total') - value($before, 'fly_edge_cache_purges_total') };
is($purges->($p), 0, 'no purge yet');
my $pg = send_request(method => 'PURGE', path => "/cached$path", region => 'scl', direct => 1,
                      headers => { Host => 'metrics.test' });
is($pg->{status}, 200, 'a PURGE') or diag($pg->{content});
$p = main::settle('scl', sub { $purges->($_[0]) == 1 });
is($purges->($p), 1, 'one purge');
is($inv->($p), 1, 'not an invalidation');


=== TEST 5: the regional Redis stops: ERROR and Redis errors move; it comes back: a reconnect
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
my $ep = { endpoint => '127.0.0.1:' . $t->redis_port('atl'), role => 'regional' };
my $path = '/hdr?t=' . int(rand(1e9)) . '&Cache-Control=max-age%3D300';
for (1 .. 6) { main::cached($path, 'atl') }
my $before = main::scrape('atl');
$t->stop_redis('atl');
my %xc;
for (1 .. 6) {
    my $res = main::cached($path, 'atl');
    is($res->{status}, 200, 'the app answers while Redis is down');
    $xc{$res->{headers}{'x-cache'} // ''}++;
}
is($xc{ERROR}, 6, 'every lookup is an ERROR') or diag(join(", ", map { "$_=$xc{$_}" } sort keys %xc));
my $d = sub { my ($p, $name, $l) = @_; value($p, $name, $l) - value($before, $name, $l) };
my $p = main::settle('atl', sub { main::req_count($_[0], 'ERROR') - main::req_count($before, 'ERROR') == 6 });
is(main::req_count($p, 'ERROR') - main::req_count($before, 'ERROR'), 6, 'six requests with status ERROR');
my $failed = $d->($p, 'fly_edge_redis_errors_total', $ep) + $d->($p, 'fly_edge_redis_timeouts_total', $ep);
ok($d->($p, 'fly_edge_redis_errors_total', $ep) >= 1 && $failed >= 6,
   'Redis errors: ' . $d->($p, 'fly_edge_redis_errors_total', $ep) . ", with timeouts $failed");
is($d->($p, 'fly_edge_redis_reconnects_total', $ep), 0, 'no reconnect yet');
$t->start_redis('atl');
# after the backoff a lookup reconnects; then the cache answers again
ok($t->wait_until(sub { (main::cached($path, 'atl')->{headers}{'x-cache'} // '') =~ /^(HIT|MISS)$/ }, scaled(15)),
   'the cache answers again');
$p = main::settle('atl', sub { $d->($_[0], 'fly_edge_redis_reconnects_total', $ep) >= 1 });
ok($d->($p, 'fly_edge_redis_reconnects_total', $ep) >= 1, 'reconnects: ' . $d->($p, 'fly_edge_redis_reconnects_total', $ep));


=== TEST 6: the regional Redis hangs: lookups time out, counted as timeouts
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
my $ep = { endpoint => '127.0.0.1:' . $t->redis_port('atl'), role => 'regional' };
my $path = '/hdr?t=' . int(rand(1e9)) . '&Cache-Control=max-age%3D300';
my $before = main::scrape('atl');
$t->pause_redis('atl');
# A worker still backing off after TEST 5's outage answers at once
# (ERROR, counted as an error); a connected one, or one that connects to
# the hung Redis, waits for fly_redis_timeout: a timeout.
my $d = sub { my ($p, $name, $l) = @_; value($p, $name, $l) - value($before, $name, $l) };
my %xc;
my $p;
my $ok = $t->wait_until(sub {
    my $res = main::cached($path, 'atl');
    $xc{$res->{status} == 200 ? $res->{headers}{'x-cache'} // '' : "status $res->{status}"}++;
    $p = main::scrape('atl');
    $d->($p, 'fly_edge_redis_timeouts_total', $ep) >= 1;
}, scaled(30));
$t->resume_redis('atl');
ok($ok, 'a lookup timed out: timeouts ' . $d->($p, 'fly_edge_redis_timeouts_total', $ep));
is_deeply([keys %xc], ['ERROR'], 'the app answered every request, X-Cache: ERROR')
    or diag(join(', ', map { "$_=$xc{$_}" } sort keys %xc));


=== TEST 7: a reload (new workers, a new cached location): every count is still there
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG . "location /cached2/ { fly_cache on; proxy_pass http://app/; }\n"
--- test
# the harness reloaded atl before this block (its configuration changed):
# what TEST 2 and 3 counted was counted by workers that are gone now
my @pids = sort $t->nginx_worker_pids('atl');
my %old = map { $_ => 1 } @{$main::SAVED{pids} || []};
ok(@pids && !grep({ $old{$_} } @pids), 'new workers: ' . join(' ', @pids)) or diag('before: ' . join(' ', keys %old));
my $p = main::scrape('atl');
ok(main::req_count($p, 'HIT') >= ($main::SAVED{hits} // 1), 'the HITs counted before are still there: ' . main::req_count($p, 'HIT'));
ok(value($p, 'fly_edge_replays_total', { state => 'method' }) >= ($main::SAVED{replays} // 1), 'and the replays');
ok(exists $p->{series}{series_key('fly_edge_cache_requests_total', { location => '/cached2/', status => 'MISS' })},
   'the new location has its series');
my $tag = 't=' . int(rand(1e9));
my $path = "/hdr?$tag&Cache-Control=max-age%3D300";
main::cached($path, 'atl');
main::filled('atl', $tag);
my $h0 = main::req_count(main::settle('atl', sub { main::req_count($_[0], 'MISS') > main::req_count($p, 'MISS') }), 'HIT');
$res = main::cached($path, 'atl');
is($res->{headers}{'x-cache'}, 'HIT', 'a HIT after the reload');
my $q = main::settle('atl', sub { main::req_count($_[0], 'HIT') == $h0 + 1 });
is(main::req_count($q, 'HIT'), $h0 + 1, 'counted on top of the old count');


=== TEST 8: the Grafana dashboard (conf/grafana-fly-edge.json) parses and queries exactly the families the endpoint emits
--- http_config eval: $main::HTTP
--- config eval: $main::CONFIG
--- test
require JSON::PP;
my $file = "$FlyEdge::Topology::ROOT/conf/grafana-fly-edge.json";
open my $fh, '<', $file or die "$file: $!";
my $d = eval { JSON::PP->new->decode(do { local $/; <$fh> }) };
ok($d, 'the dashboard is JSON') or return diag($@);
ok($d->{title} && ref $d->{panels} eq 'ARRAY' && @{$d->{panels}}, 'a dashboard with panels');
my ($ds) = grep { $_->{type} eq 'datasource' } @{$d->{templating}{list} || []};
ok($ds && $ds->{query} eq 'prometheus', 'a Prometheus data source variable (Fly\'s managed Grafana picks its own)');
my (@exprs, @bad_ds);
for my $p (map { ($_, @{$_->{panels} || []}) } @{$d->{panels}}) {
    next if $p->{type} eq 'row';
    push @bad_ds, $p->{title} unless ($p->{datasource}{uid} // '') eq '${' . $ds->{name} . '}';
    push @exprs, map { $_->{expr} } @{$p->{targets} || []};
}
push @exprs, map { ref $_->{query} ? $_->{query}{query} : $_->{query} } grep { $_->{type} eq 'query' } @{$d->{templating}{list}};
is_deeply(\@bad_ds, [], 'every panel queries the data source variable');
cmp_ok(scalar @exprs, '>=', 10, scalar(@exprs) . ' queries');
for my $e (@exprs) {
    my $depth = 0;
    for my $c (split //, $e) { $depth++ if $c =~ /[({\[]/; $depth-- if $c =~ /[)}\]]/; last if $depth < 0 }
    is($depth, 0, "balanced brackets: $e");
}
my $p = main::scrape('scl');
my %emitted = map { $_ => $p->{families}{$_}{type} } @{$p->{order}};
my %queried;
for my $e (@exprs) {
    for my $m ($e =~ /\b(fly_edge_[a-z0-9_]+)/g) {
        (my $base = $m) =~ s/_(bucket|sum|count)$//;
        $queried{($emitted{$base} // '') eq 'histogram' ? $base : $m} = 1;
    }
}
ok($emitted{$_}, "the dashboard's $_ is emitted") for sort keys %queried;
# families the dashboard leaves out on purpose (none yet)
my %absent = ();
ok($queried{$_} || $absent{$_}, "the emitted $_ is on the dashboard") for sort keys %emitted;
