# RFC 9111 rules of a shared cache, each in both directions: what is stored
# (MISS, then a HIT that does not reach the origin) and what is not (MISS,
# then MISS again, the origin reached twice, no Redis key), freshness and
# its precedence (checked through the Redis TTL), Vary variants, hop-by-hop
# headers, Age, HEAD, and the per-location cache directives.
#
# Requests go straight to the scl nginx on one keep-alive connection (one
# worker), so a fill is in Redis before the next lookup.  Each test uses its
# own path (a `t` query parameter), since Redis keeps its keys between blocks.
#
# Entries whose expiry a test waits for live $SHORT seconds (2, more on a
# slow machine: what must happen while they are fresh takes a small part of
# that); their end is polled for, never slept for.
use FlyEdge::Test;
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

# ---------------------------------------------------------------- raw origin
#
# The demo app always sends its own Date (Python's http.server), so the
# Expires-minus-Date tests need an origin whose single Date header is the
# one the test chooses: a tiny HTTP/1.1 server forked here.  Query
# parameters become response headers in order (`status=` sets the status);
# every response carries X-Origin-Count and closes the connection.

our $PARENT = $$;
our $ORIGIN = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64,
                                    ReuseAddr => 1, Proto => 'tcp')
    or die "raw origin: $!";
our $ORIGIN_PORT = $ORIGIN->sockport;
our $ORIGIN_PID = fork() // die "fork: $!";
if ($ORIGIN_PID == 0) {
    raw_origin();
    POSIX::_exit(0);
}
close $ORIGIN;
END { local $?; if ($$ == $PARENT && $ORIGIN_PID) { kill 'TERM', $ORIGIN_PID; waitpid($ORIGIN_PID, 0) } }

sub unesc { my ($s) = @_; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }

sub raw_origin {
    my $ppid = getppid;
    my $n = 0;
    while (1) {
        POSIX::_exit(0) if getppid() != $ppid;
        my $rin = '';
        vec($rin, fileno($ORIGIN), 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 1) > 0;
        my $c = $ORIGIN->accept or next;
        my $req = '';
        while ($req !~ /\r\n\r\n/) {
            my $rin2 = '';
            vec($rin2, fileno($c), 1) = 1;
            last unless select(my $r2 = $rin2, undef, undef, 5) > 0;
            last unless sysread($c, $req, 8192, length $req);
        }
        my ($method, $target) = $req =~ /^(\S+) (\S+)/ or do { close $c; next };
        my (undef, $query) = split /\?/, $target, 2;
        my @params = map { my ($k, $v) = split /=/, $_, 2; (unesc($k), unesc($v // '')) }
                     grep { length } split /&/, $query // '';
        $n++;
        my $status = 200;
        my ($date, $hdrs) = (undef, '');
        while (my ($k, $v) = splice @params, 0, 2) {
            if ($k eq 'status') { $status = $v }
            elsif ($k eq 'Date') { $date = $v }
            else { $hdrs .= "$k: $v\r\n" }
        }
        $date //= POSIX::strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime);
        my $body = "raw origin response $n\n";
        my $out = "HTTP/1.1 $status X\r\nDate: $date\r\nX-Origin-Count: $n\r\n$hdrs"
                . "Content-Type: text/plain\r\nContent-Length: " . length($body) . "\r\n"
                . "Connection: close\r\n\r\n" . ($method eq 'HEAD' ? '' : $body);
        syswrite($c, $out);
        close $c;
    }
}

# ---------------------------------------------------------------- helpers

sub esc { my ($s) = @_; $s =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge; $s }

our $SHORT = 1 + int(scaled(1) + 0.999);    # seconds: the short lifetimes (2, 5 in the sanitizer pass)
our $MAXTTL = 2 * $SHORT + 1;               # fly_cache_max_ttl of /maxttl/, seconds

# url('/hdr', Name => value, ...): the demo app (or raw origin) answers with
# those response headers, in that order.
sub url {
    my ($path, @kv) = @_;
    my @q;
    while (my ($k, $v) = splice @kv, 0, 2) { push @q, esc($k) . '=' . esc($v) }
    return @q ? "$path?" . join('&', @q) : $path;
}

sub http_date { POSIX::strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime($_[0])) }

sub req {
    my ($path, %o) = @_;
    return send_request(method => $o{method} // 'GET', path => $path, region => 'scl', direct => 1,
                        headers => $o{headers} // {}, (defined $o{body} ? (body => $o{body}) : ()));
}

sub xc { $_[0]{headers}{'x-cache'} // '' }
sub oc { $_[0]{headers}{'x-origin-count'} // -1 }

# The Redis key of a path under the default key ($scheme$host$request_uri).
sub rkey { my ($path, $host) = @_; 'fly:http' . ($host // '127.0.0.1') . $path }
sub key_exists { my ($key) = @_; main::topology()->redis('scl')->exists($key) }
sub pttl { my ($key) = @_; main::topology()->redis('scl')->pttl($key) }

sub show {
    my ($res) = @_;
    my $h = join '', map { "  $_: " . (ref $res->{headers}{$_} ? join(', ', @{$res->{headers}{$_}}) : $res->{headers}{$_}) . "\n" }
            sort keys %{$res->{headers}};
    diag("$res->{request}{method} $res->{request}{url} -> $res->{status}\n$h  body: " . substr($res->{content}, 0, 200));
}

# MISS, then a HIT answered without the origin, same status and body.
sub stored_ok {
    my ($path, $name, %o) = @_;
    my $m = req($path, %o);
    my $h = req($path, %o);
    my $ok = is(xc($m), 'MISS', "$name: first request is a MISS");
    $ok &= is(xc($h), 'HIT', "$name: stored, the second is a HIT");
    $ok &= is(oc($h), oc($m), "$name: the HIT did not reach the origin");
    $ok &= is($h->{status}, $m->{status}, "$name: same status");
    $ok &= ok($h->{content} eq $m->{content}, "$name: same body");
    unless ($ok) { show($m); show($h) }
    return ($m, $h);
}

# Requests $path until it is no longer a HIT (every answer until then is a
# HIT); it must then be a MISS or EXPIRED, at the latest a scaled margin
# after its lifetime of $secs.
sub gone_ok {
    my ($path, $secs, $name) = @_;
    my %seen;
    my $r = main::topology()->wait_until(sub {
        my $r = req($path);
        $seen{xc($r) || '-'}++;
        return xc($r) ne 'HIT' ? $r : undef;
    }, $secs + scaled(5));
    like($r ? xc($r) : 'still a HIT', qr/^(MISS|EXPIRED)$/, $name)
        or diag('seen: ' . join(', ', map { "$_ x$seen{$_}" } sort keys %seen));
}

# MISS, MISS again: the origin answered both and nothing is in Redis.
sub not_stored_ok {
    my ($path, $name, %o) = @_;
    my $m = req($path, %o);
    my $h = req($path, %o);
    my $ok = is(xc($m), 'MISS', "$name: first request is a MISS");
    $ok &= is(xc($h), 'MISS', "$name: not stored, the second is a MISS too");
    $ok &= cmp_ok(oc($h), '>', oc($m), "$name: the second reached the origin");
    $ok &= ok(!key_exists(rkey($path)), "$name: no Redis key");
    unless ($ok) { show($m); show($h) }
    return ($m, $h);
}

# Redis's timeouts only guard against a hang here: generous and scaled, so a
# busy machine never turns a healthy lookup or fill into an ERROR.
our $HTTP = qq{fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";\n}
          . sprintf("fly_redis_timeout %dms;\nfly_redis_connect_timeout %dms;\n", (scaled(2) * 1000) x 2);

our $CACHE = <<'EOF';
fly_cache on;
fly_cache_status_header X-Cache;
location / {
    proxy_pass http://app;
}
location /isc/ {
    fly_cache_ignore_set_cookie on;
    proxy_pass http://app/;
}
location /v200/ {
    fly_cache_valid 200 SHORT_TTL;
    proxy_pass http://app/;
}
location /v404/ {
    fly_cache_valid 404 30s;
    proxy_pass http://app/;
}
location /vany/ {
    fly_cache_valid any 30s;
    proxy_pass http://app/;
}
location /vdef/ {
    fly_cache_valid 30s;
    proxy_pass http://app/;
}
location /minttl/ {
    fly_cache_min_ttl 30s;
    proxy_pass http://app/;
}
location /maxttl/ {
    fly_cache_max_ttl MAX_TTL;
    proxy_pass http://app/;
}
location /bypass/ {
    fly_cache_bypass $http_x_nocache $arg_nocache;
    proxy_pass http://app/;
}
location /nostore/ {
    fly_cache_no_store $http_x_nostore $arg_nostore;
    proxy_pass http://app/;
}
location /small/ {
    fly_cache_max_size 1k;
    proxy_pass http://app/;
}
location /key/ {
    fly_cache_key "$host$uri|$http_x_tenant";
    proxy_pass http://app/;
}
location /getonly/ {
    fly_cache_methods GET;
    proxy_pass http://app/;
}
location /raw/ {
    proxy_pass http://127.0.0.1:ORIGIN_PORT/;
}
location /rawdate/ {
    proxy_pass_header Date;
    proxy_pass http://127.0.0.1:ORIGIN_PORT/;
}
EOF
$CACHE =~ s/ORIGIN_PORT/$ORIGIN_PORT/g;
$CACHE =~ s/SHORT_TTL/${SHORT}s/g;
$CACHE =~ s/MAX_TTL/${MAXTTL}s/g;

run_tests();

__DATA__

=== TEST 1: Cache-Control that forbids storing: no-store, private, private="..", no-cache, no-cache=".."
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $i = 0;
for my $cc ('no-store', 'public, max-age=60, no-store', 'private', 'private, max-age=60',
            'private="Set-Cookie", max-age=60', 's-maxage=60, private', 'no-cache', 'no-cache, max-age=60',
            'no-cache="X-Foo", max-age=60', 'max-age=0', 'max-age=abc', 'NO-STORE, max-age=60') {
    $i++;
    main::not_stored_ok(main::url('/hdr', t => "1-$i", 'Cache-Control' => $cc), "Cache-Control: $cc");
}
# two Cache-Control header lines are one list: no-store in the second still counts
main::not_stored_ok(main::url('/hdr', t => '1-two', 'Cache-Control' => 'public, max-age=60', 'Cache-Control' => 'no-store'),
                    'Cache-Control: public, max-age=60 + Cache-Control: no-store');


=== TEST 2: Cache-Control that allows storing: public, max-age / s-maxage, any case
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $i = 0;
for my $cc ('public, max-age=60', 'max-age=60', 's-maxage=60', 'Public, Max-Age=60', 'max-age=60, must-revalidate',
            'max-age=60, proxy-revalidate', 'max-age=60, no-transform, immutable, x-custom="a,b"') {
    $i++;
    my $p = main::url('/hdr', t => "2-$i", 'Cache-Control' => $cc);
    my ($m, $h) = main::stored_ok($p, "Cache-Control: $cc");
    is($h->{headers}{'cache-control'}, $cc, "$cc: the HIT carries the origin's Cache-Control");
    ok(main::key_exists(main::rkey($p)), "$cc: the Redis key is $p under fly:http127.0.0.1");
}


=== TEST 3: a request with Authorization: not stored unless public, s-maxage or must-revalidate
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my %auth = (headers => { Authorization => 'Bearer alice-token' });
my $p = main::url('/hdr', t => '3-plain', 'Cache-Control' => 'max-age=60');
main::not_stored_ok($p, 'Authorization + max-age=60', %auth);
is(main::xc(main::req($p)), 'MISS', 'and nothing was stored for requests without Authorization either');
main::not_stored_ok(main::url('/hdr', t => '3-none'), 'Authorization without freshness', %auth);
for my $cc ('public, max-age=60', 's-maxage=60', 'must-revalidate, max-age=60') {
    my $q = main::url('/hdr', t => "3-$cc", 'Cache-Control' => $cc);
    main::stored_ok($q, "Authorization + $cc", %auth);
}


=== TEST 4: a request with Cache-Control: no-store is not stored (RFC 9111 5.2.1.5)
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => '4', 'Cache-Control' => 'public, max-age=60');
main::not_stored_ok($p, 'request no-store', headers => { 'Cache-Control' => 'no-store' });
main::stored_ok(main::url('/hdr', t => '4-plain', 'Cache-Control' => 'public, max-age=60'), 'the same response to a request without it');


=== TEST 5: Set-Cookie is not stored; with fly_cache_ignore_set_cookie on it is, without the cookie
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @h = ('Cache-Control' => 'public, max-age=60', 'Set-Cookie' => 'session=alice; Path=/; HttpOnly',
         'Set-Cookie' => 'theme=dark', 'X-Kept' => 'yes');
main::not_stored_ok(main::url('/hdr', t => '5', @h), 'Set-Cookie');
my $p = main::url('/isc/hdr', t => '5', @h);
my ($m, $h) = main::stored_ok($p, 'fly_cache_ignore_set_cookie on');
my $sc = $m->{headers}{'set-cookie'};
is_deeply(ref $sc ? $sc : [$sc], ['session=alice; Path=/; HttpOnly', 'theme=dark'], 'the MISS still gives the client its cookies');
ok(!exists $h->{headers}{'set-cookie'}, 'the HIT has no Set-Cookie');
is($h->{headers}{'x-kept'}, 'yes', 'other headers are kept');
my $again = main::req($p);
ok(!exists $again->{headers}{'set-cookie'}, 'nor has the next HIT');
my $raw = main::topology()->redis('scl')->get(main::rkey($p)) // '';
ok($raw !~ /alice|theme=dark/, 'the stored entry does not hold the cookies');
main::not_stored_ok(main::url('/isc/hdr', t => '5-private', 'Cache-Control' => 'private, max-age=60', 'Set-Cookie' => 'a=1'),
                    'ignore_set_cookie does not override private');


=== TEST 6: Vary: * is never stored; Vary on Accept-Language keeps one variant per language
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
main::not_stored_ok(main::url('/hdr', t => '6-star', 'Cache-Control' => 'public, max-age=60', Vary => '*'), 'Vary: *');
main::not_stored_ok(main::url('/hdr', t => '6-star2', 'Cache-Control' => 'public, max-age=60', Vary => 'Accept-Encoding, *'),
                    'Vary: Accept-Encoding, *');
my $p = main::url('/hdr', t => '6', 'Cache-Control' => 'public, max-age=60', Vary => 'Accept-Language', echo => 'Accept-Language');
my %lang = map { $_ => { 'Accept-Language' => $_ } } qw(en fr de);
my $en = main::req($p, headers => $lang{en});
my $fr = main::req($p, headers => $lang{fr});
is(main::xc($en), 'MISS', 'en: MISS');
is(main::xc($fr), 'MISS', 'fr: MISS (another variant)');
is($en->{content}, "Accept-Language: en\n", 'en body');
is($fr->{content}, "Accept-Language: fr\n", 'fr body');
for my $l (qw(en fr)) {
    my $h = main::req($p, headers => $lang{$l});
    is(main::xc($h), 'HIT', "$l: HIT");
    is($h->{content}, "Accept-Language: $l\n", "$l: its own body");
    is(main::oc($h), main::oc($l eq 'en' ? $en : $fr), "$l: the origin was not reached");
    is($h->{headers}{vary}, 'Accept-Language', "$l: the HIT carries Vary");
}
my $de = main::req($p, headers => $lang{de});
is(main::xc($de), 'MISS', 'a third language is a MISS');
is($de->{content}, "Accept-Language: de\n", 'with its own body');
my $none = main::req($p);
is(main::xc($none), 'MISS', 'no Accept-Language at all is a variant of its own');
is($none->{content}, "Accept-Language: \n", 'with its own body');
is(main::xc(main::req($p)), 'HIT', 'and is stored too');
is(main::req($p, headers => $lang{en})->{content}, "Accept-Language: en\n", 'en still answered with its variant');


=== TEST 7: Vary on two request headers
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => '7', 'Cache-Control' => 'max-age=60', Vary => 'Accept-Language, X-Device',
                  echo => 'Accept-Language', echo => 'X-Device');
my @combos = (['en', 'mobile'], ['en', 'desktop'], ['fr', 'mobile']);
my %first;
for my $c (@combos) {
    my $r = main::req($p, headers => { 'Accept-Language' => $c->[0], 'X-Device' => $c->[1] });
    is(main::xc($r), 'MISS', "@$c: MISS");
    $first{"@$c"} = $r;
}
for my $c (reverse @combos) {
    my $r = main::req($p, headers => { 'Accept-Language' => $c->[0], 'X-Device' => $c->[1] });
    is(main::xc($r), 'HIT', "@$c: HIT");
    is($r->{content}, "Accept-Language: $c->[0]\nX-Device: $c->[1]\n", "@$c: its own body");
    is(main::oc($r), main::oc($first{"@$c"}), "@$c: from its own fill");
}
is(main::xc(main::req($p, headers => { 'Accept-Language' => 'fr', 'X-Device' => 'desktop' })), 'MISS',
   'a new combination is a MISS');
is(main::xc(main::req($p, headers => { 'Accept-Language' => 'en' })), 'MISS', 'a missing second header is a MISS');


=== TEST 8: freshness: s-maxage over max-age over Expires; Expires in the past or invalid; the origin's Age
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $now = time;
my $S = $main::SHORT;
my $A = $S + 2;
my %p = (
    smax   => main::url('/hdr', t => '8-smax', 'Cache-Control' => "s-maxage=$S, max-age=100"),
    max    => main::url('/hdr', t => '8-max', 'Cache-Control' => 'max-age=100', Expires => main::http_date($now - 3600)),
    exp    => main::url('/hdr', t => '8-exp', Expires => main::http_date($now + 60)),
    age    => main::url('/hdr', t => '8-age', 'Cache-Control' => "max-age=$A", Age => '2'),
);
# the short-lived ones are checked right after they are stored
main::stored_ok($p{smax}, 'freshness smax');
my $smax = main::pttl(main::rkey($p{smax}));
ok($smax > 0 && $smax <= $S * 1000, "s-maxage=$S beats max-age=100 (Redis TTL $smax ms)");
main::stored_ok($p{age}, 'freshness age');
my $age = main::pttl(main::rkey($p{age}));
ok($age > 0 && $age <= $S * 1000, "max-age=$A with Age: 2 is fresh for $S s more (Redis TTL $age ms)");
my $hit = main::req($p{age});
cmp_ok($hit->{headers}{age}, '>=', 2, "the HIT's Age counts the origin's Age");
main::stored_ok($p{max}, 'freshness max');
my $max = main::pttl(main::rkey($p{max}));
ok($max > 90_000 && $max <= 100_000, "max-age=100 beats an Expires in the past (Redis TTL $max ms)");
main::stored_ok($p{exp}, 'freshness exp');
my $exp = main::pttl(main::rkey($p{exp}));
ok($exp > 50_000 && $exp <= 61_000, "Expires in 60 s without Cache-Control (Redis TTL $exp ms)");

main::not_stored_ok(main::url('/hdr', t => '8-past', Expires => main::http_date($now - 60)), 'Expires in the past');
main::not_stored_ok(main::url('/hdr', t => '8-zero', Expires => '0'), 'Expires: 0');
main::not_stored_ok(main::url('/hdr', t => '8-junk', Expires => 'next tuesday'), 'Expires: next tuesday');
main::not_stored_ok(main::url('/hdr', t => '8-old', 'Cache-Control' => 'max-age=5', Age => '10'), 'max-age=5 with Age: 10');
main::not_stored_ok(main::url('/hdr', t => '8-eqage', 'Cache-Control' => 'max-age=5', Age => '5'), 'max-age=5 with Age: 5');

for my $k (qw(smax age)) {
    main::gone_ok($p{$k}, $S, "$k: gone after its lifetime");
}
is(main::xc(main::req($p{max})), 'HIT', 'max-age=100 is still fresh');


=== TEST 9: Expires minus the origin's Date (origin clock behind and ahead)
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $now = time;
for my $loc ('/raw/', '/rawdate/') {
    my $behind = main::url("${loc}x", t => "9-behind", Date => main::http_date($now - 3600), Expires => main::http_date($now - 3600 + 60));
    main::stored_ok($behind, "$loc: origin clock 1 h behind, Expires = Date + 60");
    my $ttl = main::pttl(main::rkey($behind));
    ok($ttl > 50_000 && $ttl <= 61_000, "$loc: fresh for Expires - Date = 60 s (Redis TTL $ttl ms)");

    my $ahead = main::url("${loc}x", t => "9-ahead", Date => main::http_date($now + 3600), Expires => main::http_date($now + 3600 + 30));
    main::stored_ok($ahead, "$loc: origin clock 1 h ahead, Expires = Date + 30");
    $ttl = main::pttl(main::rkey($ahead));
    ok($ttl > 20_000 && $ttl <= 31_000, "$loc: fresh for 30 s, not 3630 s (Redis TTL $ttl ms)");

    main::not_stored_ok(main::url("${loc}x", t => "9-before", Date => main::http_date($now), Expires => main::http_date($now - 10)),
                        "$loc: Expires before Date");
}


=== TEST 10: fly_cache_valid for responses without freshness; without it they are not stored
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
main::not_stored_ok(main::url('/hdr', t => '10'), 'no freshness, no fly_cache_valid');
main::not_stored_ok(main::url('/hdr', t => '10-404', status => 404), '404 without freshness, no fly_cache_valid');

my $S = $main::SHORT;
my $v = main::url('/v200/hdr', t => '10');
main::stored_ok($v, "fly_cache_valid 200 ${S}s: a 200");
my $ttl = main::pttl(main::rkey($v));
ok($ttl > 0 && $ttl <= $S * 1000, "stored for $S s (Redis TTL $ttl ms)");
my $own = main::url('/v200/hdr', t => '10-own', 'Cache-Control' => 'max-age=60');
main::stored_ok($own, "fly_cache_valid 200 ${S}s: a response's own max-age wins");
$ttl = main::pttl(main::rkey($own));
ok($ttl > 50_000, "stored for its max-age (Redis TTL $ttl ms)");
main::not_stored_ok(main::url('/v200/hdr', t => '10-404', status => 404), "fly_cache_valid 200 ${S}s: a 404");
main::not_stored_ok(main::url('/v200/hdr', t => '10-nostore', 'Cache-Control' => 'no-store'), 'fly_cache_valid does not override no-store');

main::stored_ok(main::url('/v404/hdr', t => '10', status => 404), 'fly_cache_valid 404 30s: a 404');
main::not_stored_ok(main::url('/v404/hdr', t => '10'), 'fly_cache_valid 404 30s: a 200');

for my $s (200, 404, 410, 500) {
    my ($m, $h) = main::stored_ok(main::url('/vany/hdr', t => '10', status => $s), "fly_cache_valid any 30s: a $s");
    is($h->{status}, $s, "the HIT is a $s");
}

for my $s (200, 301, 302) {
    my ($m, $h) = main::stored_ok(main::url('/vdef/hdr', t => '10', status => $s, ($s == 200 ? () : (Location => "/moved-$s"))),
                                  "fly_cache_valid 30s: a $s");
    if ($s != 200) {
        like($h->{headers}{location} // '', qr{/moved-$s$}, "the $s HIT keeps its Location");
        is($h->{headers}{location}, $m->{headers}{location}, "the same Location as the MISS");
    }
}
main::not_stored_ok(main::url('/vdef/hdr', t => '10', status => 404), 'fly_cache_valid 30s: a 404');

main::gone_ok($v, $S, "the fly_cache_valid ${S}s entry is gone after $S s");


=== TEST 11: fly_cache_min_ttl and fly_cache_max_ttl clamp the lifetime
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $min = main::url('/minttl/hdr', t => '11', 'Cache-Control' => 'max-age=2');
main::stored_ok($min, 'fly_cache_min_ttl 30s, max-age=2');
my $ttl = main::pttl(main::rkey($min));
ok($ttl > 25_000 && $ttl <= 30_000, "raised to 30 s (Redis TTL $ttl ms)");
my $long = main::url('/minttl/hdr', t => '11-long', 'Cache-Control' => 'max-age=600');
main::stored_ok($long, 'fly_cache_min_ttl 30s, max-age=600');
$ttl = main::pttl(main::rkey($long));
ok($ttl > 590_000, "a longer lifetime is kept (Redis TTL $ttl ms)");
main::not_stored_ok(main::url('/minttl/hdr', t => '11-zero', 'Cache-Control' => 'max-age=0'),
                    'fly_cache_min_ttl does not make max-age=0 storable');

my ($S, $M) = ($main::SHORT, $main::MAXTTL);
for my $cc ('max-age=3600', 's-maxage=3600', 'public, max-age=86400') {
    my $max = main::url('/maxttl/hdr', t => "11-$cc", 'Cache-Control' => $cc);
    main::stored_ok($max, "fly_cache_max_ttl ${M}s, $cc");
    $ttl = main::pttl(main::rkey($max));
    ok($ttl > 0 && $ttl <= $M * 1000, "$cc lowered to $M s (Redis TTL $ttl ms)");
}
my $short = main::url('/maxttl/hdr', t => '11-short', 'Cache-Control' => "max-age=$S");
main::stored_ok($short, "fly_cache_max_ttl ${M}s, max-age=$S");
$ttl = main::pttl(main::rkey($short));
ok($ttl > 0 && $ttl <= $S * 1000, "a shorter lifetime is kept (Redis TTL $ttl ms)");


=== TEST 12: statuses: 206, 304, a Range request, and a 500 without freshness are not stored; others with freshness are
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
main::not_stored_ok(main::url('/hdr', t => '12-206', status => 206, 'Content-Range' => 'bytes 0-4/10', body => 'hello',
                              'Cache-Control' => 'public, max-age=60'), '206 Partial Content');
main::not_stored_ok(main::url('/hdr', t => '12-304', status => 304, 'Cache-Control' => 'public, max-age=60',
                              ETag => '"v1"'), '304 Not Modified');
main::not_stored_ok(main::url('/hdr', t => '12-500', status => 500, body => 'boom'), '500 without freshness');
main::not_stored_ok(main::url('/vany/hdr', t => '12-206', status => 206, 'Content-Range' => 'bytes 0-4/10', body => 'hello'),
                    '206 with fly_cache_valid any');

my $r = main::url('/big', size => 100, t => '12-range', 'Cache-Control' => 'public, max-age=60');
main::not_stored_ok($r, 'a request with Range', headers => { Range => 'bytes=0-9' });
is(main::xc(main::req($r)), 'MISS', 'a plain GET after the Range requests is a MISS');

for my $s (404, 410, 500, 503) {
    my ($m, $h) = main::stored_ok(main::url('/hdr', t => '12', status => $s, body => "status $s", 'Cache-Control' => 'max-age=60'),
                                  "a $s with max-age=60");
    is($h->{status}, $s, "the HIT is a $s");
    is($h->{content}, "status $s", "with the $s body");
}
my ($m, $h) = main::stored_ok(main::url('/hdr', t => '12', status => 301, Location => '/elsewhere', 'Cache-Control' => 'max-age=60'),
                              'a 301 with max-age=60');
like($h->{headers}{location} // '', qr{/elsewhere$}, 'the 301 HIT keeps its Location');
is($h->{headers}{location}, $m->{headers}{location}, 'the same Location as the MISS');


=== TEST 13: hop-by-hop headers are not stored; every other header is
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => '13', 'Cache-Control' => 'public, max-age=60',
                  Connection => 'X-Hop, X-Hop-Two', 'X-Hop' => 'named in Connection', 'X-Hop-Two' => '2',
                  'Keep-Alive' => 'timeout=5', 'Trailer' => 'X-Checksum', 'Upgrade' => 'h2c',
                  'Proxy-Connection' => 'keep-alive', 'Proxy-Authenticate' => 'Basic realm="x"', 'TE' => 'trailers',
                  'X-Kept' => 'yes', 'X-Multi' => 'one', 'X-Multi' => 'two', 'ETag' => '"abc"',
                  'Last-Modified' => 'Tue, 01 Oct 2024 10:00:00 GMT', 'Content-Type' => 'text/x-fly; charset=utf-8',
                  'Link' => '</style.css>; rel=preload', body => 'hop test');
my ($m, $h) = main::stored_ok($p, 'hop-by-hop');
for my $name (qw(x-hop x-hop-two keep-alive trailer upgrade proxy-connection proxy-authenticate te)) {
    ok(!exists $h->{headers}{$name}, "the HIT has no $name") or diag("$name: $h->{headers}{$name}");
}
for my $name (qw(x-kept etag last-modified content-type link content-length)) {
    is($h->{headers}{$name}, $m->{headers}{$name}, "the HIT keeps $name");
}
is_deeply($h->{headers}{'x-multi'}, ['one', 'two'], 'a repeated header keeps both values in order');
is($h->{headers}{'content-type'}, 'text/x-fly; charset=utf-8', 'Content-Type exactly');
is($h->{content}, 'hop test', 'body');
my $raw = main::topology()->redis('scl')->get(main::rkey($p)) // '';
ok($raw !~ /named in Connection|h2c|timeout=5|X-Checksum/, 'the stored entry holds none of the hop-by-hop values');


=== TEST 14: a HIT carries Age, which grows; a HEAD hit has Content-Length and no body; a HEAD miss does not fill
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/big', size => 777, t => '14', 'Cache-Control' => 'max-age=60');
my ($m, $h) = main::stored_ok($p, 'Age');
ok(!defined $m->{headers}{age}, 'the MISS has no Age');
like($h->{headers}{age}, qr/^\d+$/, 'the HIT carries Age');
cmp_ok($h->{headers}{age}, '<=', 1, 'at first 0 or 1');
my $first = $h->{headers}{age} // 0;
my $later = main::topology()->wait_until(sub {
    my $r = main::req($p);
    return (main::xc($r) ne 'HIT' || ($r->{headers}{age} // 0) > $first) ? $r : undef;
}, scaled(5));
is($later && main::xc($later), 'HIT', 'still a HIT');
cmp_ok($later && $later->{headers}{age}, '>=', 1, 'Age grew');
cmp_ok($later && $later->{headers}{age}, '>', $first, 'larger than on the first HIT');

my $head = main::req($p, method => 'HEAD');
is(main::xc($head), 'HIT', 'HEAD is answered from the GET entry');
is($head->{status}, 200, 'HEAD 200');
is($head->{headers}{'content-length'}, 777, 'with the Content-Length of the body');
is($head->{content}, '', 'and no body');
is(main::oc($head), main::oc($m), 'without the origin');
like($head->{headers}{age} // '', qr/^\d+$/, 'and with Age');
is(main::xc(main::req($p)), 'HIT', 'the connection is fine for the next GET');

my $q = main::url('/big', size => 300, t => '14-head', 'Cache-Control' => 'max-age=60');
my $hm = main::req($q, method => 'HEAD');
is(main::xc($hm), 'MISS', 'HEAD on an empty key is a MISS');
is($hm->{content}, '', 'without a body');
my $hm2 = main::req($q, method => 'HEAD');
is(main::xc($hm2), 'MISS', 'a HEAD MISS does not fill: the next HEAD is a MISS');
cmp_ok(main::oc($hm2), '>', main::oc($hm), 'and reaches the origin');
my $g = main::req($q);
is(main::xc($g), 'MISS', 'the next GET is a MISS');
is(length $g->{content}, 300, 'with the full body');
my $g2 = main::req($q);
is(main::xc($g2), 'HIT', 'the GET filled the entry');
is($g2->{content}, $g->{content}, 'same body');


=== TEST 15: fly_cache_bypass: not read (BYPASS, origin reached), the response still refreshes the entry
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/bypass/hdr', t => '15', 'Cache-Control' => 'max-age=60');
my ($m, $h) = main::stored_ok($p, 'before the bypass');
my $b = main::req($p, headers => { 'X-Nocache' => '1' });
is(main::xc($b), 'BYPASS', 'X-Nocache: 1 is a BYPASS');
cmp_ok(main::oc($b), '>', main::oc($m), 'the origin answered');
my $after = main::req($p);
is(main::xc($after), 'HIT', 'then a HIT');
is(main::oc($after), main::oc($b), 'of the response the bypass stored');
my $zero = main::req($p, headers => { 'X-Nocache' => '0' });
is(main::xc($zero), 'HIT', 'X-Nocache: 0 does not bypass');
my $empty = main::req($p, headers => { 'X-Nocache' => '' });
is(main::xc($empty), 'HIT', 'an empty value does not bypass');
my $arg = main::url('/bypass/hdr', t => '15-arg', nocache => 'yes', 'Cache-Control' => 'max-age=60');
my $a1 = main::req($arg);
my $a2 = main::req($arg);
is(main::xc($a1), 'BYPASS', '?nocache=yes is a BYPASS');
is(main::xc($a2), 'BYPASS', 'every time');
cmp_ok(main::oc($a2), '>', main::oc($a1), 'and reaches the origin every time');


=== TEST 16: fly_cache_no_store: not stored, but a stored entry is still read
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/nostore/hdr', t => '16', 'Cache-Control' => 'max-age=60');
my $n1 = main::req($p, headers => { 'X-Nostore' => '1' });
my $n2 = main::req($p, headers => { 'X-Nostore' => 'yes' });
is(main::xc($n1), 'MISS', 'X-Nostore: MISS');
is(main::xc($n2), 'MISS', 'X-Nostore: not stored, MISS again');
cmp_ok(main::oc($n2), '>', main::oc($n1), 'the origin answered both');
ok(!main::key_exists(main::rkey($p)), 'no Redis key');
my ($m, $h) = main::stored_ok($p, 'without X-Nostore');
my $n3 = main::req($p, headers => { 'X-Nostore' => '1' });
is(main::xc($n3), 'HIT', 'with X-Nostore a stored entry is still a HIT');
is(main::req($p, headers => { 'X-Nostore' => '0' })->{headers}{'x-cache'}, 'HIT', 'X-Nostore: 0 is no no_store');
main::not_stored_ok(main::url('/nostore/hdr', t => '16-arg', nostore => 1, 'Cache-Control' => 'max-age=60'), '?nostore=1');


=== TEST 17: fly_cache_max_size 1k: bigger responses pass intact and are not stored
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $route ('big', 'chunked', 'bin') {
    my $p = main::url("/small/$route", size => 2048, t => "17-$route", 'Cache-Control' => 'max-age=60');
    my ($m, $h) = main::not_stored_ok($p, "$route 2 KiB");
    for my $r ($m, $h) {
        is(length $r->{content}, 2048, "$route: the whole body");
        is(Digest::SHA::sha256_hex($r->{content}), $r->{headers}{'x-body-sha256'}, "$route: the body the app sent");
    }
}
main::stored_ok(main::url('/small/big', size => 1024, t => '17-fits', 'Cache-Control' => 'max-age=60'), 'exactly 1 KiB');
main::not_stored_ok(main::url('/small/big', size => 1025, t => '17-over', 'Cache-Control' => 'max-age=60'), '1 KiB + 1');
main::stored_ok(main::url('/small/chunked', size => 1000, chunk => 100, t => '17-ch', 'Cache-Control' => 'max-age=60'),
                'a chunked 1000 bytes');
my ($m, $h) = main::stored_ok(main::url('/big', size => 200_000, t => '17-default', 'Cache-Control' => 'max-age=60'),
                              '200 kB under the default 1m');
is(length $h->{content}, 200_000, 'the HIT has the whole body');


=== TEST 18: fly_cache_key with variables
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $acme = { 'X-Tenant' => 'acme' };
my $m = main::req(main::url('/key/hdr', t => '18', q => 1, 'Cache-Control' => 'max-age=60'), headers => $acme);
my $h = main::req(main::url('/key/hdr', t => '18', q => 2, 'Cache-Control' => 'max-age=60'), headers => $acme);
is(main::xc($m), 'MISS', 'first is a MISS');
is(main::xc($h), 'HIT', 'another query string, same key: HIT');
is(main::oc($h), main::oc($m), 'from the first fill');
my $other = main::req(main::url('/key/hdr', t => '18', q => 1, 'Cache-Control' => 'max-age=60'), headers => { 'X-Tenant' => 'globex' });
is(main::xc($other), 'MISS', 'another tenant is another key');
ok(main::key_exists('fly:127.0.0.1/key/hdr|acme'), 'the key is the configured string');
ok(main::key_exists('fly:127.0.0.1/key/hdr|globex'), 'one per tenant');


=== TEST 19: the default key includes the Host: two hosts, two entries
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => '19', 'Cache-Control' => 'max-age=60');
my ($am, $ah) = main::stored_ok($p, 'a.example', headers => { Host => 'a.example' });
my ($bm, $bh) = main::stored_ok($p, 'b.example', headers => { Host => 'b.example' });
cmp_ok(main::oc($bm), '>', main::oc($ah), 'b.example did not get the a.example entry: the origin was reached');
is(main::oc($bh), main::oc($bm), 'b.example is answered from its own entry');
is(main::oc(main::req($p, headers => { Host => 'a.example' })), main::oc($am), 'a.example still from its own entry');
ok(main::key_exists(main::rkey($p, 'a.example')), 'key for a.example');
ok(main::key_exists(main::rkey($p, 'b.example')), 'key for b.example');
my $upper = main::req($p, headers => { Host => 'A.EXAMPLE' });
is(main::xc($upper), 'HIT', 'host names are case-insensitive ($host is lower case)');
is(main::oc($upper), main::oc($am), 'the a.example entry');


=== TEST 20: fly_cache_methods GET: a HEAD is not answered from the cache
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/getonly/big', size => 50, t => '20', 'Cache-Control' => 'max-age=60');
my ($m, $h) = main::stored_ok($p, 'GET');
my $head = main::req($p, method => 'HEAD');
is($head->{status}, 200, 'HEAD 200');
isnt(main::xc($head), 'HIT', 'HEAD is not a HIT');
cmp_ok(main::oc($head), '>', main::oc($m), 'HEAD reached the origin');


=== TEST 21: POST, PUT, PATCH and DELETE are never answered from the cache, nor stored
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => '21', 'Cache-Control' => 'public, max-age=60');
my ($m, $h) = main::stored_ok($p, 'GET');
for my $method (qw(POST PUT PATCH DELETE)) {
    my $r = main::req($p, method => $method, body => 'x');
    is($r->{status}, 200, "$method 200");
    isnt(main::xc($r), 'HIT', "$method is not a HIT");
    cmp_ok(main::oc($r), '>', main::oc($m), "$method reached the origin");
}
my $q = main::url('/hdr', t => '21-post', 'Cache-Control' => 'public, max-age=60');
my $post = main::req($q, method => 'POST', body => 'x');
# the POST invalidated its own URI: a tombstone, never an entry
like(main::topology()->redis('scl')->get(main::rkey($q)) // 'FLYT', qr/^FLYT/,
     'a POST response with max-age is not stored');
is(main::xc(main::req($q)), 'MISS', 'the next GET is a MISS');
