# The near cache and the race of client-side caching (issue 11): an
# invalidation that arrives while a GET of the same key is in flight (they
# travel on different connections) stops that GET's reply from entering
# the zone.  The reply is still served to its request.
#
# atl's nginx uses a fake Redis (t/app/fake_redis.py) that speaks client
# tracking; with race_key=KEY, a GET of KEY on the tracking connection
# first sends the invalidation of KEY to the worker's subscriber
# connection, waits, then answers with the value (a write came right after
# the GET: the invalidation overtakes the reply).
#
# - Without the race, a Redis HIT enters the zone and the next HIT is near
#   (the control: the same steps can tell the two apart).
# - With the race, the HIT is served from Redis with the stored bytes, the
#   fake played the race, and the next request still goes to Redis (a
#   Redis HIT, one more GET): the reply never entered the zone.  Once the
#   race is off, the key enters the zone again.
#
# Timing: events only (tiers, the fake's counters, log lines).
use FlyEdge::Test;
use FlyEdge::Near;
use FlyEdge::FakeServers;

our $FAKE = FlyEdge::FakeServers::fake_redis();

sub http_config {
    my ($tag) = @_;
    my $port = $FAKE->port;
    my $t = int(scaled(2) * 1000);
    return <<"EOF";
# block: $tag
fly_redis "redis://127.0.0.1:$port/0";
fly_redis_timeout ${t}ms;
fly_redis_connect_timeout ${t}ms;
fly_cache_near_zone 4m;
EOF
}

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    add_header X-Tier "$fly_cache_tier" always;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

sub key_of { "fly:http$FlyEdge::Near::HOST$_[0]" }
sub path_of { "/bin?size=3000&k=$_[0]&Cache-Control=max-age%3D300" }

# A MISS whose fill reached the fake; returns the MISS.
sub fill {
    my ($p) = @_;
    my $m = near_get($p);
    die "fill $p: $m->{status} " . cache_of($m) . "\n" unless $m->{status} == 200 && cache_of($m) eq 'MISS';
    topology()->wait_until(sub { $FAKE->has(key_of($p)) }, scaled(5)) or die "$p not stored in the fake\n";
    return $m;
}

sub log_lines { my ($re) = @_; grep { $_ =~ $re } split /\n/, block_error_log('atl') }

run_tests(pg => 0, worker_processes => 1);

__DATA__

=== TEST 1: without the race a Redis HIT enters the zone (the control)
--- http_config_atl eval: main::http_config('control')
--- config_atl eval: $main::CACHE
--- test
my $F = $main::FAKE;
$F->set_mode();
my $p = main::path_of('control');
my $m = main::fill($p);
my ($first, $near) = until_near($p);
is(tier($first), 'redis', 'the first HIT comes from Redis');
ok($near->{content} eq $m->{content}, 'then the zone serves the stored bytes');
is($F->stats->{race_played} // 0, 0, 'no race was played');


=== TEST 2: an invalidation overtakes the GET's reply: the reply is served, but it never enters the zone
--- http_config_atl eval: main::http_config('race')
--- config_atl eval: $main::CACHE
--- test
my $F = $main::FAKE;
$F->set_mode();
my $p = main::path_of('race');
my $key = main::key_of($p);
my $m = main::fill($p);
# tracking is on before the race is played (else nothing vouches anyway)
ok($t->wait_until(sub { scalar main::log_lines(qr/fly near: tracking on, session /) }, scaled(5)),
   'tracking is on');
my $st0 = $F->stats;
$F->set_mode(race_key => $key, race_ms => 50);
my $r = near_get($p);
is("$r->{status} " . cache_of($r) . ' ' . tier($r), '200 HIT redis', 'the raced GET: a Redis HIT');
ok($r->{content} eq $m->{content}, '... served with the stored bytes');
is($r->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, '... not from the app');
my $st = $F->stats;
is(($st->{race_played} // 0) - ($st0->{race_played} // 0), 1, 'the fake played the race');
ok($t->wait_until(sub { scalar main::log_lines(qr/fly near: not stored "\Q$key\E" .*changed since the GET/) }, scaled(5)),
   'the worker refused the reply for the zone (debug log)');
$F->set_mode();
my $g0 = $F->stats->{get};
my $n = near_get($p);
is(cache_of($n) . ' ' . tier($n), 'HIT redis', 'the next request is not served from the zone');
ok($F->stats->{get} > $g0, '... it asked Redis');
my ($first, $near) = until_near($p);
ok($near->{content} eq $m->{content}, 'without the race the key enters the zone again');


=== TEST 3: an invalidation of the tag epoch overtakes the lookup's GET of it: the entry does not enter the zone
--- http_config_atl eval: main::http_config('epoch race')
--- config_atl eval: $main::CACHE
--- test
my $F = $main::FAKE;
$F->set_mode();
my $p = main::path_of('epoch');
my $m = main::fill($p);
ok($t->wait_until(sub { scalar main::log_lines(qr/fly near: tracking on, session /) }, scaled(5)),
   'tracking is on');
my $st0 = $F->stats;
$F->set_mode(race_key => "fly:\x1fepoch", race_ms => 50);
my $r = near_get($p);
is("$r->{status} " . cache_of($r) . ' ' . tier($r), '200 HIT redis', 'a Redis HIT');
ok($r->{content} eq $m->{content}, '... served with the stored bytes');
is(($F->stats->{race_played} // 0) - ($st0->{race_played} // 0), 1, 'the fake played the race on the epoch');
my $key = main::key_of($p);
ok($t->wait_until(sub { scalar main::log_lines(qr/fly near: not stored "\Q$key\E" .*changed since the GET/) }, scaled(5)),
   'the worker refused the entry for the zone (debug log)');
$F->set_mode();
my $n = near_get($p);
is(cache_of($n) . ' ' . tier($n), 'HIT redis', 'the next request is not served from the zone');
my ($first, $near) = until_near($p);
ok($near, 'without the race the key enters the zone again');
