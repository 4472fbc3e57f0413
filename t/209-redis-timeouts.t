# The Redis client's timeouts (issue 7), against a fake Redis
# (t/app/fake_redis.py) that answers one key late, or goes silent, and a
# DNS server that never answers (t/app/dns_server.py).  Only the atl
# region is involved; its nginx runs one worker, so that every request
# shares one Redis connection.
#
# - A command's timeout counts from its write and fails only its own
#   request: one slow reply gives that request to the app (ERROR), the
#   requests after it on the same connection get their own replies (HITs
#   with their bodies), the late reply is discarded when it comes, and the
#   connection is neither closed nor opened again.
# - Commands held in the client (behind the bound on replies in flight)
#   fail alone, unsent, by fly_redis_timeout; the connection is dropped
#   only once Redis has sent nothing for the liveness period (5 x
#   fly_redis_timeout here), logged; meanwhile and after, the app answers.
# - A worker shutting down (reload) while a request waits for the
#   resolver answers that request (from the app) before it exits.
#
# Timing: only events are asserted (statuses, bodies, the fake's
# counters, log lines and their order).  fly_redis_timeout is scaled();
# the liveness period is 5 x that, well above the seconds a request takes
# to come back from the app.
use FlyEdge::Test;
use FlyEdge::FakeServers;
use FlyEdge::CacheCheck;                # get, app_count, from_app, from_cache, fill, poll_until, key_of, bin, $CACHE
use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

our $HOST = 'timeouts.test';            # keys are fly:http$HOST$uri
our $FAKE = FlyEdge::FakeServers::fake_redis();
our $DNS = FlyEdge::FakeServers::dns_server("hung.test.internal DROP\n");
our %SEEN;                              # highest X-Origin-Count seen

# Bodies are checked by size and sha256; a fill must reach the fake.
FlyEdge::CacheCheck::configure(host => $HOST, seen => \%SEEN, timeout => scaled(30), fill_secs => 5,
                               stored => sub { $FAKE->has($_[0]) });

sub ms { int(scaled($_[0]) * 1000) }

# The http snippet of atl: the fake Redis (or `url`), fly_redis_timeout
# of `timeout` seconds (scaled), `extra` lines first.
sub http_config {
    my (%o) = @_;
    my $url = $o{url} // 'redis://127.0.0.1:' . $FAKE->port . '/0';
    my $t = ms($o{timeout} // 1);
    # a line of its own makes each block's configuration new: fresh workers
    return join "\n", "# block: $o{tag}", ($o{extra} // ()), qq{fly_redis "$url";}, "fly_redis_timeout ${t}ms;",
                      'fly_redis_connect_timeout 2s;', '';
}

sub log_lines { my ($re) = @_; grep { $_ =~ $re } split /\n/, block_error_log('atl') }

run_tests(pg => 0, worker_processes => 1);

__DATA__

=== TEST 1: one slow reply fails only its own request; the next ones get their own replies on the same connection, the late reply is discarded
--- http_config_atl eval: main::http_config(tag => 'late reply')
--- config_atl eval: $main::CACHE
--- timeout: 60
--- test
my $F = $main::FAKE;
$F->set_mode();
my %m;
my %path = map { $_ => main::bin(3000 + length($_) * 1000, "t1$_") } qw(a bb ccc);
for my $k (sort keys %path) {
    $m{$k} = main::fill($path{$k}, 3000 + length($k) * 1000, "fill $k");
    main::from_cache(main::get($path{$k}), $m{$k}, "$k before", main::app_count());
}
my $st0 = $F->stats;

# The reply to a's GET comes only once the client sends its next command.
$F->set_mode(late_key => main::key_of($path{a}));
main::from_app(main::get($path{a}), 4000, 'ERROR', 'the slow one');
main::from_cache(main::get($path{bb}), $m{bb}, 'the next one, behind the late reply', main::app_count());
main::from_cache(main::get($path{ccc}), $m{ccc}, 'the one after', main::app_count());
my $st = $F->stats;
is($st->{late_sent} - $st0->{late_sent}, 1, 'the late reply was sent, on that connection');
is($st->{clients}, $st0->{clients}, 'no new connection was opened');
is($st->{closed}, $st0->{closed}, 'the connection was not closed');
# a lookup is two GETs, pipelined: the entry and the tag epoch
is($st->{get} - $st0->{get}, 6, 'three lookups, each GET sent once');
ok(scalar main::log_lines(qr/fly redis reply string late, discarded/), 'the late reply was discarded (debug log)');
ok(scalar main::log_lines(qr/\[warn\].*fly redis regional .*command timed out/), 'the timeout is logged at warn');
my @err = main::log_lines(qr/\[error\].*fly redis/);
ok(!@err, 'no error: the connection was not failed') or diag(join "\n", @err);

$F->set_mode();
main::from_cache(main::get($path{a}), $m{a}, 'the slow key, answered in time now', main::app_count());
my $st1 = $F->stats;
is("$st1->{clients} $st1->{closed}", "$st0->{clients} $st0->{closed}", 'still the same connection');


=== TEST 2: Redis goes silent: commands fail alone (those held behind the bound on replies in flight unsent), the connection is dropped after the liveness period, the app answers throughout
--- http_config_atl eval: main::http_config(tag => 'silent')
--- config_atl eval: $main::CACHE
--- timeout: 120
--- test
my $F = $main::FAKE;
$F->set_mode();
my $size = 300 * 1024;
my @paths = map { main::bin($size, "t2k$_") } 1 .. 8;
my %m;
for my $p (@paths) {
    $m{$p} = main::fill($p, $size, "fill $p");
}
# large replies: few of them are sent ahead at once
main::from_cache(main::get($_), $m{$_}, "HIT $_", main::app_count()) for @paths;
my $st0 = $F->stats;
my $from = $t->error_log_size('atl');

$F->set_mode(get => 'silent');
my @want = map { $paths[$_ % @paths] } 0 .. 39;
my @res = FlyEdge::Test::parallel_get(\@want, region => 'atl', host => $main::HOST, timeout => scaled(60));
my @bad = grep { !($_->{status} == 200 && length($_->{content}) == $size
                   && ($_->{headers}{'x-cache'} // '') eq 'ERROR'
                   && sha256_hex($_->{content}) eq ($_->{headers}{'x-body-sha256'} // '')) } @res;
ok(!@bad, '40 requests at once while Redis is silent: each answered by the app (ERROR)')
    or diag(join '', map { "  $_->{path}: $_->{status} X-Cache " . ($_->{headers}{'x-cache'} // '-') . "\n" } @bad);
my $st = $F->stats;
my $sent = $st->{get} - $st0->{get};
cmp_ok($sent, '<', 80, "only $sent of the 80 GETs (40 lookups: entry and tag epoch) went out: the others were held, and failed unsent");
ok(scalar main::log_lines(qr/fly redis command timed out, never sent/), 'held commands timed out unsent (debug log)');
ok(scalar main::log_lines(qr/fly redis command timed out, its reply will be discarded/), 'sent ones timed out alone (debug log)');

# The connection goes only once Redis has been silent for the liveness period.
my $gone = $t->wait_until(sub { $F->stats->{closed} > $st0->{closed} }, scaled(40));
ok($gone, 'then the client closed the silent connection');
my @err = grep { /\[error\].*fly redis/ } split /\n/, $t->error_log_since('atl', $from);
is(scalar @err, 1, 'one error line') or diag(join "\n", @err);
like($err[0] // '', qr/fly redis regional 127\.0\.0\.1:\d+: no reply for \d+ ms, closing the connection/,
     'the connection was dropped for silence, not for a command timeout');
my ($liveness) = ($err[0] // '') =~ /no reply for (\d+) ms/;
is($liveness, 5 * main::ms(1), 'after the liveness period, 5 x fly_redis_timeout');
is($F->stats->{closed} - $st0->{closed}, 1, 'that connection only');

$F->set_mode();
my $hit = main::poll_until($paths[0], $size, 'HIT', ['MISS', 'ERROR'], 15, 'Redis back');
ok($hit, 'Redis back: a HIT again after the backoff') and main::from_cache($hit, $m{$paths[0]}, 'the HIT after', main::app_count());


=== TEST 3: a worker shutting down (reload) while a request waits for a DNS server that never answers: the request is answered by the app before the worker exits
--- http_config_atl eval: main::http_config(tag => 'sigquit', url => 'redis://hung.test.internal:6379/0', timeout => 3, extra => 'resolver 127.0.0.1:' . $main::DNS->port . ' valid=1s; resolver_timeout ' . main::ms(30) . 'ms;')
--- config_atl eval: $main::CACHE
--- timeout: 60
--- test
my $from = $t->error_log_size('atl');
my ($worker) = $t->nginx_worker_pids('atl');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('atl'), Proto => 'tcp', Timeout => 5)
    or die "connect: $!";
print $s "GET /hdr?body=parked HTTP/1.0\r\nHost: $main::HOST\r\n\r\n";
my $parked = $t->wait_until(sub {
    my $log = $t->error_log_since('atl', $from);
    $log =~ /fly redis resolving "hung\.test\.internal"/ && $log =~ /fly redis command GET/;
}, scaled(10));
ok($parked, 'the request waits for the resolver');
# The query may reach the DNS server a moment after the log line says it is being resolved.
ok($t->wait_until(sub { scalar $main::DNS->queries('hung.test.internal') }, scaled(10)),
   'the DNS server got the query (and drops it)');

$t->reload_nginx('atl');    # the old worker shuts down gracefully; returns once it has exited
ok(!grep({ $_ == $worker } $t->nginx_worker_pids('atl')), 'the old worker has exited');

my $buf = '';
my $sel = IO::Select->new($s);
my $deadline = time + scaled(10);
while (time < $deadline && $sel->can_read(0.5)) {
    my $n = sysread($s, my $chunk, 65536);
    last unless $n;
    $buf .= $chunk;
}
my ($head, $body) = split /\r\n\r\n/, $buf, 2;
like($head // '', qr{^HTTP/1\.[01] 200}, 'the parked request was answered 200');
like($head // '', qr/^X-Cache: ERROR\r?$/mi, 'by the app, the cache failing open (ERROR)');
like($head // '', qr/^X-Origin-Count: \d+\r?$/mi, 'the app was reached');
is($body, 'parked', "the app's body");

# Its Redis wait ended by the deadline, after the shutdown had begun.
my $log = $t->error_log_since('atl', $from);
my $quit = index($log, "$worker#$worker: gracefully shutting down");
my $timed = $log =~ /^.*\b$worker#$worker: .*fly redis command timed out.*$/m ? $-[0] : -1;
ok($quit >= 0, 'the worker was told to shut down');
ok($timed > $quit, 'while the request was still waiting: its command timed out after that');
unlike($log, qr/open socket .* left in connection/, 'no connection was left behind by the exiting worker');
