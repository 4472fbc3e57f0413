package FlyEdge::CacheCheck;

# Requests and answer checks of the cache's integration tests.  The
# default exports serve the Redis fault tests (t/203, t/207, t/209):
# requests to one region's nginx for one Host, and whether an answer is
# the app's own or the cache's stored one (call configure() once at the
# top of the file).  The :http exports serve the HTTP-detail tests
# (t/213, t/214, t/215): requests straight to scl's nginx, their headers,
# and the http snippet of the real Redis.  Load after FlyEdge::Test.  See
# the POD at the end.

use strict;
use warnings;

use Carp qw(croak);
use Digest::SHA qw(sha256_hex);
use Exporter 'import';
use HTTP::Tiny;
use Test::More ();
use Time::HiRes qw(time sleep);
use FlyEdge::CacheTest ();

our @EXPORT = qw(get app_count show from_app from_cache fill poll_until par_get key_of bin $CACHE);
our @EXPORT_OK = qw(url req xcache oc hv expect rkey pttl redis_http);
our %EXPORT_TAGS = (http => [qw(url req xcache oc hv show expect rkey pttl redis_http)]);

# The cache location of the three files: every GET through fly_cache,
# X-Cache on the answer.
our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_valid 200 60s;
    fly_cache_status_header X-Cache;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

my %C;

sub configure {
    my (%o) = @_;
    croak 'configure: host, seen and stored are required' unless $o{host} && $o{seen} && $o{stored};
    croak "configure: match is sha256 or body" unless ($o{match} // 'sha256') =~ /^(?:sha256|body)$/;
    %C = (region => 'atl', match => 'sha256', fill_secs => 3, %o);
}

sub _c { croak 'FlyEdge::CacheCheck::configure() was not called' unless %C; $C{$_[0]} }

sub key_of { 'fly:http' . _c('host') . $_[0] }
sub bin { my ($size, $tag) = @_; "/bin?size=$size&k=$tag&Cache-Control=max-age%3D60" }

# get($path, region => R, via_emulator => 1): a GET with the file's Host,
# straight to the region's nginx (default: the configured region), or
# through the Fly proxy emulator; the client timeout is the configured one.
sub get {
    my ($path, %o) = @_;
    my $r = $o{region} // _c('region');
    return FlyEdge::CacheTest::get($path, $r, host => _c('host'), timeout => _c('timeout'))
        unless $o{via_emulator};
    return FlyEdge::Test::send_request(method => 'GET', path => $path, region => $r, direct => 0,
                                       headers => { Host => _c('host') }, timeout => _c('timeout'));
}

# How many requests the region's app has answered (its /__count).
sub app_count { FlyEdge::CacheTest::app_count($_[0] // _c('region')) }

# An answer as a diagnostic: the request (when send_request made it),
# status, time, headers, the body's start.
sub show {
    my ($res) = @_;
    my $h = join '', map { "  $_: " . (hv($res, $_) // '') . "\n" } sort keys %{$res->{headers} || {}};
    my $c = $res->{content} // '';
    my $len = length $c;
    $c = substr($c, 0, 300) . '...' if $len > 300;
    my $req = $res->{request} ? "$res->{request}{method} $res->{request}{url} " : '';
    Test::More::diag("$req-> $res->{status} " . ($res->{reason} // '')
                     . sprintf(" in %.3fs, %d body bytes\n", $res->{elapsed} // -1, $len) . "${h}  body: $c");
}

# Whether $res carries the app's bytes: $want is the size (match sha256:
# that many bytes whose sha256 is the app's X-Body-Sha256) or the body.
sub _right_bytes {
    my ($res, $want) = @_;
    return $res->{content} eq $want if _c('match') eq 'body';
    return length($res->{content}) == $want
        && sha256_hex($res->{content}) eq ($res->{headers}{'x-body-sha256'} // '');
}

# The app's answer: 200, its bytes ($want as in _right_bytes), the app
# reached (X-Origin-Count moved past every value seen in the region),
# X-Cache $cache (a string, or a regex); with region_header, answered by
# that region's app (X-App-Region); with within, in less than that many s.
sub from_app {
    my ($res, $want, $cache, $label, %o) = @_;
    my $r = $o{region} // _c('region');
    my $seen = _c('seen');
    my $ok = Test::More::is($res->{status}, 200, "$label: status 200");
    if (_c('match') eq 'body') {
        $ok &= Test::More::is($res->{content}, $want, "$label: the app's body");
    } else {
        $ok &= Test::More::is(length $res->{content}, $want, "$label: $want body bytes");
        $ok &= Test::More::is(sha256_hex($res->{content}), $res->{headers}{'x-body-sha256'} // '-',
                              "$label: the app's bytes (sha256)");
    }
    $ok &= Test::More::is($res->{headers}{'x-app-region'}, $r, "$label: answered by the $r app") if _c('region_header');
    my $n = $res->{headers}{'x-origin-count'} // -1;
    my $prev = $seen->{$r} // 0;
    $ok &= Test::More::ok($n > $prev, "$label: the app was reached (X-Origin-Count $n > $prev)");
    $seen->{$r} = $n if $n > $prev;
    $ok &= ref $cache ? Test::More::like($res->{headers}{'x-cache'} // '', $cache, "$label: X-Cache like $cache")
                      : Test::More::is($res->{headers}{'x-cache'}, $cache, "$label: X-Cache $cache");
    my $within = _c('within');
    $ok &= Test::More::cmp_ok($res->{elapsed}, '<', $within, "$label: answered within $within s") if defined $within;
    show($res) unless $ok;
    return $ok;
}

# A HIT.  from_cache($res, $m, $label, $before): byte-identical to the MISS
# $m that stored it (with hit_sha, also the sha256 the app sent with it),
# its X-Origin-Count, and with $before the app's count unchanged.
# from_cache($res, $body, $label, origin => R): the stored body, made by
# region R's app (default: the region asked), X-Origin-Count a stored one.
sub from_cache {
    my ($res, $m, $label, @rest) = @_;
    my $ok = Test::More::is($res->{status}, 200, "$label: status 200");
    if (ref $m) {
        my ($before) = @rest;
        $ok &= Test::More::is($res->{headers}{'x-cache'}, 'HIT', "$label: X-Cache HIT");
        $ok &= Test::More::ok($res->{content} eq $m->{content}, "$label: byte-identical body (" . length($res->{content}) . ' bytes)');
        $ok &= Test::More::is(sha256_hex($res->{content}), $m->{headers}{'x-body-sha256'}, "$label: sha256 of the app's bytes")
            if _c('hit_sha');
        $ok &= Test::More::is($res->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "$label: the stored X-Origin-Count");
        $ok &= Test::More::is(app_count(), $before, "$label: the app was not reached") if defined $before;
    } else {
        my (%o) = @rest;
        my $origin = $o{origin} // $o{region} // _c('region');
        $ok &= Test::More::is($res->{content}, $m, "$label: the stored body");
        $ok &= Test::More::is($res->{headers}{'x-cache'}, 'HIT', "$label: X-Cache HIT");
        $ok &= Test::More::is($res->{headers}{'x-app-region'}, $origin, "$label: the entry made by the $origin app");
        my $n = $res->{headers}{'x-origin-count'} // -1;
        $ok &= Test::More::ok($n <= (_c('seen')->{$origin} // 0), "$label: X-Origin-Count $n is a stored one (app not reached)");
    }
    show($res) unless $ok;
    return $ok;
}

# A MISS answered by the app ($want as in from_app) whose fill then shows
# in Redis (the configured `stored` check of the key, polled for
# scaled(fill_secs)); returns the MISS.
sub fill {
    my ($path, $want, $label) = @_;
    my $m = get($path);
    from_app($m, $want, 'MISS', "$label: MISS");
    my $key = key_of($path);
    Test::More::ok(FlyEdge::Test::topology()->wait_until(sub { _c('stored')->($key) }, FlyEdge::Test::scaled(_c('fill_secs'))),
                   "$label: the fill was stored in Redis ($key)");
    return $m;
}

# GETs until one has X-Cache $want, for at most scaled($secs): each must be
# 200 with the right bytes ($body as in from_app) and X-Cache in @$allowed
# or $want, and each other than $want must come from the app (X-Origin-Count
# past every one seen).  Returns that answer, or undef (after a failed test).
sub poll_until {
    my ($path, $body, $want, $allowed, $secs, $label) = @_;
    $secs = FlyEdge::Test::scaled($secs);
    my $r = _c('region');
    my $seen = _c('seen');
    my $deadline = time + $secs;
    my %saw;
    while (time < $deadline) {
        my $res = get($path);
        my $x = $res->{headers}{'x-cache'} // '';
        $saw{$x}++;
        unless ($res->{status} == 200 && _right_bytes($res, $body) && grep { $_ eq $x } @$allowed, $want) {
            Test::More::fail("$label: unexpected answer while waiting for $want");
            show($res);
            return undef;
        }
        return $res if $x eq $want;
        my $n = $res->{headers}{'x-origin-count'} // 0;
        if ($n <= ($seen->{$r} // 0)) {
            Test::More::fail("$label: an $x answer that did not come from the app");
            show($res);
            return undef;
        }
        $seen->{$r} = $n;
        sleep 0.05;
    }
    Test::More::fail("$label: no $want within $secs s (saw " . join(', ', map { "$_ x$saw{$_}" } sort keys %saw) . ')');
    return undef;
}

# GETs in parallel, each on its own connection straight to the region's
# nginx (the harness's parallel_get): par_get(\@paths, %o) one of each,
# par_get($n, $path, %o) $n of $path.  region => R (default: the
# configured one).  Returns { path, status, headers, content, elapsed }
# in order (elapsed undef on a timeout).
sub par_get {
    my @paths = ref $_[0] ? @{ shift() } : do { my ($n, $p) = splice @_, 0, 2; ref $p ? @$p : ($p) x $n };
    my (%o) = @_;
    return FlyEdge::Test::parallel_get(\@paths, region => $o{region} // _c('region'), host => _c('host'));
}

# ---- the HTTP-detail tests (:http) ----------------------------------------

# url('/hdr', Name => value, ...): the app answers with those headers.
sub url { my ($path, @kv) = @_; "$path?" . HTTP::Tiny->new->www_form_urlencode([@kv]) }

# req($path, method => M, Header => value, ...): straight to scl's nginx.
sub req {
    my ($path, %h) = @_;
    my $method = delete $h{method} // 'GET';
    return FlyEdge::Test::send_request(method => $method, path => $path, region => 'scl', direct => 1, headers => \%h);
}

sub xcache { $_[0]{headers}{'x-cache'} // '' }
sub oc { $_[0]{headers}{'x-origin-count'} // -1 }
# A header's value; several of them joined with ", ".
sub hv { my $v = $_[0]{headers}{lc $_[1]}; ref $v ? join(', ', @$v) : $v }

# expect($res, $name, status => S (default 200), cache => X-Cache, body => B).
sub expect {
    my ($res, $name, %want) = @_;
    my $ok = 1;
    $ok &= Test::More::is($res->{status}, $want{status} // 200, "$name: status");
    $ok &= Test::More::is(xcache($res), $want{cache}, "$name: X-Cache $want{cache}") if exists $want{cache};
    $ok &= Test::More::is($res->{content}, $want{body}, "$name: body") if exists $want{body};
    show($res) unless $ok;
    return $ok;
}

# The Redis key of a path under the default key (Host 127.0.0.1), and its
# TTL in scl's Redis in ms.
sub rkey { 'fly:http127.0.0.1' . $_[0] }
sub pttl { FlyEdge::Test::topology()->redis('scl')->pttl($_[0]) }

# The http snippet of the bed's Redis (the region's replica; with
# primary => 1 also fly_redis_primary) with fly_redis_timeout $timeout.
sub redis_http {
    my (%o) = @_;
    return qq{fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";\n}
         . ($o{primary} ? qq{fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";\n} : '')
         . "fly_redis_timeout $o{timeout};\n";
}

1;

__END__

=head1 NAME

FlyEdge::CacheCheck - requests and answer checks of the Redis fault tests

=head1 SYNOPSIS

    use FlyEdge::Test;
    use FlyEdge::CacheCheck;        # exports the subs below and $CACHE
    our %SEEN;                      # highest X-Origin-Count seen per region
    FlyEdge::CacheCheck::configure(
        host    => 'resp.test',     # the Host of every request: keys are fly:http$host$uri
        seen    => \%SEEN,
        stored  => sub { $fake->has($_[0]) },   # is key $_[0] in Redis? (fill waits for it)
        timeout => 20,              # the client's timeout (send_request scales it); default the harness's
        # region => 'atl', match => 'sha256', fill_secs => 3,
        # hit_sha => 1, region_header => 1, within => $secs
    );

    --- config_atl eval: $main::CACHE
    my $m = main::fill(main::bin(5000, 'tag'), 5000, 'label');       # MISS, stored
    main::from_cache(main::get(main::bin(5000, 'tag')), $m, 'a HIT', $before);
    main::from_app(main::get($path), 5000, 'ERROR', 'label');
    my $hit = main::poll_until($path, 5000, 'HIT', ['MISS'], 3, 'label');
    my @res = main::par_get(\@paths);     # or main::par_get(20, $path)

    use FlyEdge::CacheCheck qw(:http);   # url req xcache oc hv show expect rkey pttl redis_http
    our $HTTP = FlyEdge::CacheCheck::redis_http(timeout => '5s');   # primary => 1: also fly_redis_primary
    my $r = main::req(main::url('/hdr', ETag => '"a"'), 'If-None-Match' => '"a"');
    main::expect($r, 'a 304', status => 304, cache => 'HIT');
    main::pttl(main::rkey($path));

=head1 DESCRIPTION

C<configure> says what differs between the files: C<host>, the default
C<region> (atl), the C<seen> hash from_app and poll_until keep the highest
X-Origin-Count of each region in, the C<stored> check fill polls (the fake
Redis's HAS or the real Redis's GET) and for how many seconds
(C<fill_secs>, scaled), the client C<timeout> of C<get>, and what the
"want" argument of from_app, fill and poll_until is: C<match =E<gt> 'sha256'>
a body size (the bytes must hash to the app's X-Body-Sha256, t/app
/bin), C<match =E<gt> 'body'> the body itself.  C<region_header> adds the
X-App-Region check to from_app, C<within> a bound on the answer's time,
C<hit_sha> the sha256 check to from_cache against a MISS.

Every check is a Test::More test with the label given; the number of
tests a call makes depends only on the configuration and the arguments,
not on the answer, so a file's plan stays the same.  On a failure the
answer is shown with C<show>.

The C<:http> exports need no configuration: C<req> sends to scl's nginx
with the headers given (Host is the harness's, so keys are
C<fly:http127.0.0.1$uri>, C<rkey>); C<xcache>, C<oc> and C<hv> read an
answer's X-Cache, X-Origin-Count and any header; C<expect> checks status,
X-Cache and body; C<redis_http> is the C<http_config> of the bed's Redis.

=cut
