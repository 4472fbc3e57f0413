# UPDATING (issue 10): stale-while-revalidate (RFC 5861 3, honoured without
# configuration) and fly_cache_use_stale updating (with fly_cache_stale).
# An expired entry within that window takes the key's fill lock in the
# regional Redis: the holder refreshes it (EXPIRED, or REVALIDATED after
# a 304), every other request of the region meanwhile gets the stored
# entry at once as UPDATING; exactly one refresh reaches the app.  Never
# where must-revalidate forbids stale.
#
# The app's /hdr answers after `delay` ms (the refresh is slow, so the
# concurrent requests come while it runs), with `cond=1` a 304 to our
# conditional request whose Cache-Control is `cc304` (a long max-age: the
# refreshed entry is then a HIT for good).  Entries get max-age=1; a test
# polls the clock until the second after it is over.
use FlyEdge::Test;
use FlyEdge::CacheTest;
use HTTP::Tiny;

sub ms { int(scaled($_[0]) * 1000) }
sub url { my ($path, @kv) = @_; "$path?" . HTTP::Tiny->new->www_form_urlencode([@kv]) }
sub apps_total { my $n = 0; $n += app_count($_) for qw(scl ord atl); $n }

sub until_expired {
    my ($when, $ttl) = @_;
    main::topology()->wait_until(sub { time >= $when + $ttl + 1 }, $ttl + 5)
        or die "the clock did not move";
}

# X-Cache values of the responses, counted; all must be 200 with $body.
sub counted {
    my ($name, $body, @res) = @_;
    my @bad = grep { $_->{status} != 200 || $_->{content} ne $body } @res;
    ok(!@bad, "$name: all " . scalar(@res) . " answered 200 with the body")
        or diag(join "\n", map { "$_->{status} [" . ($_->{headers}{'x-cache'} // '') . "] " . substr($_->{content}, 0, 80) } @bad);
    my %xc;
    $xc{ $_->{headers}{'x-cache'} // '' }++ for @res;
    return \%xc;
}

our $HTTP = qq{fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";\n}
          . qq{fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";\n}
          . qq{fly_redis_timeout 5s;\n};

our $CACHE = <<'CONF';
fly_cache on;
fly_cache_status_header X-Cache;
location / {
    proxy_pass http://app;
}
location /upd/ {
    fly_cache_use_stale updating;
    fly_cache_stale 1h;
    proxy_pass http://app/;
}
CONF

run_tests(pg => 0);

__DATA__

=== TEST 1: stale-while-revalidate without configuration: 20 concurrent requests for the expired entry, one refresh reaches the app, the others get UPDATING; then the refreshed entry is a HIT
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/hdr', t => 1, ETag => '"v1"', cond => 1, body => "swr\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1, stale-while-revalidate=3600', cc304 => 'max-age=3600');
my $m = get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 20], host => 'localhost', timeout => 60);
my $xc = main::counted('expired, swr', "swr\n", @res);
is(main::apps_total() - $before, 1, 'exactly one refresh reached the app');
is(($xc->{REVALIDATED} // 0) + ($xc->{EXPIRED} // 0), 1, 'one request refreshed it') or diag(explain($xc));
cmp_ok($xc->{UPDATING} // 0, '>=', 1, 'the others got the stored entry as UPDATING') or diag(explain($xc));
is(($xc->{UPDATING} // 0) + ($xc->{HIT} // 0), 19, 'nobody else went to the app') or diag(explain($xc));
my ($u) = grep { ($_->{headers}{'x-cache'} // '') eq 'UPDATING' } @res;
is($u->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'UPDATING is the stored response') if $u;
ok($t->wait_until(sub { (get($p)->{headers}{'x-cache'} // '') eq 'HIT' }, main::scaled(10)),
   'then the refreshed entry is a HIT');


=== TEST 2: fly_cache_use_stale updating with fly_cache_stale: the same for a response without stale-while-revalidate; without updating, none
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/upd/hdr', t => 2, ETag => '"v2"', cond => 1, body => "upd\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1', cc304 => 'max-age=3600');
my $n = main::url('/hdr', t => '2n', ETag => '"v2"', cond => 1, body => "upd\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1', cc304 => 'max-age=3600');
is(get($p)->{headers}{'x-cache'}, 'MISS', 'filled (updating)');
is(get($n)->{headers}{'x-cache'}, 'MISS', 'filled (no updating)');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 10], host => 'localhost', timeout => 60);
my $xc = main::counted('updating', "upd\n", @res);
is(main::apps_total() - $before, 1, 'exactly one refresh reached the app');
cmp_ok($xc->{UPDATING} // 0, '>=', 1, 'UPDATING') or diag(explain($xc));
$before = main::apps_total();
my @none = parallel_get([($n) x 5], host => 'localhost', timeout => 60);
my $nc = main::counted('no updating', "upd\n", @none);
ok(!$nc->{UPDATING}, 'no UPDATING without updating or stale-while-revalidate') or diag(explain($nc));
cmp_ok(main::apps_total() - $before, '>', 1, 'each went to the app');


=== TEST 3: must-revalidate: never UPDATING, even with stale-while-revalidate and updating configured
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/upd/hdr', t => 3, ETag => '"v3"', cond => 1, body => "mr\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1, must-revalidate, stale-while-revalidate=3600',
                  cc304 => 'max-age=3600, must-revalidate');
is(get($p)->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 5], host => 'localhost', timeout => 60);
my $xc = main::counted('must-revalidate', "mr\n", @res);
ok(!$xc->{UPDATING}, 'no UPDATING') or diag(explain($xc));
cmp_ok(main::apps_total() - $before, '>', 1, 'each revalidated with the app');


=== TEST 4: nginx -t accepts updating with the other causes
--- http_config eval: $main::HTTP
--- config
fly_cache on;
fly_cache_use_stale error timeout updating http_503;
location / { proxy_pass http://app; }
--- request
GET /__health
--- error_code: 200
