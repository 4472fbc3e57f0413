# The cache's Redis connections: host names resolved with nginx's resolver
# (AAAA-only as on Fly's private network, re-resolved after a failure),
# IPv6 literals, DNS failures that must not hang requests, SELECT, ACL
# users and a wrong password, one connection per worker, and keys too long
# to cache.
#
# Besides the harness's topology this file runs, by PID, its own DNS server
# (t/app/dns_server.py, answers from a zone file the blocks rewrite) and a
# redis-server bound to [::1] only (same password, plus an ACL user).
use FlyEdge::Test;
use Fcntl qw(:flock);
use File::Temp qw(tempdir);
use IO::Socket::IP;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use Config;
use Digest::SHA qw(sha1_hex);

our $ROOT = $FlyEdge::Topology::ROOT;
our $OWNER = $$;
our $DIR = tempdir('fly-edge-205-XXXXXX', DIR => $ENV{FLY_TEST_TMPDIR} || '/tmp');
chmod 0755, $DIR;
our $PW = substr(sha1_hex(rand() . $$ . time), 0, 24);    # the topology's Redis password too
our $ACL_USER = 'flyuser';
our $ACL_PASS = 'secret-' . substr(sha1_hex(rand()), 0, 8);
our $CC = 'Cache-Control=max-age%3D60';
our (%PROC, @LOCKS);
our $ZONE = "$DIR/zone.json";
our $DNS_LOG = "$DIR/dns.log";
# A request that must not wait for the resolver is answered within $PROMPT
# seconds: in those blocks (http_conf(quick => 1)) the Redis timeouts are
# the module's defaults (100 ms / 200 ms, at most a fifth of $PROMPT), and
# every resolver_timeout a block could wait for is at least 5 times
# $PROMPT: the one this file sets and nginx's default of 30 s (TEST 7; 5 x
# 6 s in the sanitizer pass).  Elsewhere the Redis timeouts only guard
# against a hang: scaled(2) s, so that setting up a connection on a busy
# machine never turns a healthy lookup into an ERROR.
our $PROMPT = scaled(1.5);

# ------------------------------------------------------------------ processes of this file

# A TCP (or, with udp => 1, UDP) port below the ephemeral range that binds
# now on 127.0.0.1 and ::1, locked (flock) in the harness's lock directory so
# parallel test files never share one.
sub free_port {
    my (%o) = @_;
    my ($lo) = eval { open my $f, '<', '/proc/sys/net/ipv4/ip_local_port_range' or die; split ' ', scalar <$f> };
    $lo ||= 32768;
    my ($min, $max) = $lo > 12000 ? (10000, $lo - 1) : (61000, 65000);
    my $dir = '/tmp/fly-edge-port-locks';
    unless (-d $dir) { mkdir $dir; chmod 01777, $dir }
    for (1 .. 500) {
        my $port = $min + int(rand($max - $min));
        open(my $fh, '>>', "$dir/$port") or next;
        chmod 0666, "$dir/$port";
        flock($fh, LOCK_EX | LOCK_NB) or next;
        my $ok = 1;
        for my $addr ('127.0.0.1', '::1') {
            my $s = IO::Socket::IP->new(LocalHost => $addr, LocalPort => $port, ReuseAddr => 1,
                                        Proto => $o{udp} ? 'udp' : 'tcp', ($o{udp} ? () : (Listen => 1)));
            $ok = 0 unless $s;
            close $s if $s;
        }
        next unless $ok;
        push @LOCKS, $fh;
        return $port;
    }
    die "no free port";
}

my %PRCTL = (x86_64 => 157, aarch64 => 167);

sub spawn {
    my ($name, $log, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        POSIX::setpgid(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        my ($arch) = $Config{archname} =~ /^(\w+?)-/;
        syscall($PRCTL{$arch}, 1, 15) if $arch && $PRCTL{$arch};   # dies with the test
        { exec { $cmd[0] } @cmd }
        POSIX::_exit(127);
    }
    $PROC{$name} = $pid;
    return $pid;
}

sub stop_extras {
    return unless $$ == $OWNER;
    my @pids = grep { kill 0, $_ } values %PROC;
    kill 'TERM', @pids;
    my $deadline = time + scaled(5);
    while (@pids && time < $deadline) {
        @pids = grep { waitpid($_, POSIX::WNOHANG()) == 0 } @pids;
        sleep 0.02 if @pids;
    }
    for my $pid (@pids) { kill 'KILL', $pid; waitpid($pid, 0) }
    %PROC = ();
}

END {
    local $?;
    stop_extras();
    if ($$ == $OWNER) {
        my $passing = eval { Test::Builder->new->is_passing } // 1;
        if ($ENV{FLY_TEST_KEEP} || !$passing) { print STDERR "# 205: DNS and [::1] Redis files kept in $DIR\n" }
        else { system('rm', '-rf', $DIR) }
    }
}

sub wait_for {
    my ($what, $sub, $secs) = @_;
    my $deadline = time + scaled($secs // 10);
    until ($sub->()) {
        die "$what: timed out\n" if time > $deadline;
        sleep 0.02;
    }
}

# ------------------------------------------------------------------ the DNS server

# set_zone(name => {A => [...], AAAA => [...]} | 'NXDOMAIN' | 'DROP', ...):
# the DNS server's whole zone, replaced atomically.
sub set_zone {
    my (%names) = @_;
    my $tmp = "$ZONE.tmp";
    open my $fh, '>', $tmp or die "$tmp: $!";
    print $fh JSON::PP->new->canonical->encode({ ttl => 1, names => \%names });
    close $fh;
    rename $tmp, $ZONE or die "rename: $!";
}

our %BASE_ZONE = (
    'redis.test.internal'  => { A => ['127.0.0.1'] },      # the harness's Redis
    'redis6.test.internal' => { AAAA => ['::1'] },         # AAAA only, as on Fly
    'moving.test.internal' => { A => ['127.0.0.2'] },      # nothing listens there
    'hung.test.internal'   => 'DROP',                      # never answered
);

sub dns_log_size { -s $DNS_LOG // 0 }

# The queries (name, type, answer) the DNS server logged after offset $off.
sub dns_queries_since {
    my ($off, $name) = @_;
    open my $fh, '<', $DNS_LOG or return ();
    seek $fh, $off, 0;
    my @q;
    while (<$fh>) {
        next unless /^\S+ query (\S+) (\S+) -> (.*)$/;
        next if defined $name && lc $1 ne lc $name;
        push @q, [$1, $2, $3];
    }
    return @q;
}

# ------------------------------------------------------------------ the [::1] Redis

# A tiny RESP client (Redis.pm does not take IPv6 addresses).
sub resp_connect {
    my ($port, $user, $pass) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '::1', PeerPort => $port, Timeout => scaled(3)) or die "connect [::1]:$port: $@";
    $s->autoflush(1);
    my $r = resp($s, 'AUTH', (defined $user ? $user : ()), $pass // $PW);
    die "AUTH: $r" unless $r eq 'OK';
    return $s;
}

sub resp {
    my ($s, @args) = @_;
    print $s '*' . @args . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @args;
    return resp_read($s);
}

sub resp_read {
    my ($s) = @_;
    my $line = <$s>;
    die "redis closed the connection\n" unless defined $line;
    $line =~ s/\r\n\z//;
    my ($type, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $type eq '+';
    return "ERROR $v" if $type eq '-';
    return 0 + $v if $type eq ':';
    if ($type eq '$') {
        return undef if $v < 0;
        my $buf = '';
        while (length $buf < $v + 2) {
            read($s, $buf, $v + 2 - length $buf, length $buf) or die "short bulk reply\n";
        }
        return substr($buf, 0, $v);
    }
    return $v < 0 ? undef : [map { resp_read($s) } 1 .. $v] if $type eq '*';
    die "bad reply '$line'\n";
}

our $R6_PORT = free_port();          # the extra redis-server on [::1]
our $DEAD_DNS_PORT = free_port(udp => 1);   # a resolver address where nothing listens
our $R6;                             # our RESP connection to it

sub r6 { $R6 //= resp_connect($R6_PORT) }

# ------------------------------------------------------------------ start them

set_zone(%BASE_ZONE);
mkdir "$DIR/redis6";
spawn('redis6', "$DIR/redis6.log", '/usr/bin/redis-server', '--port', $R6_PORT, '--bind', '::1',
      '--protected-mode', 'no', '--daemonize', 'no', '--dir', "$DIR/redis6", '--logfile', '',
      '--save', '', '--appendonly', 'no', '--requirepass', $PW);
spawn('dns', "$DIR/dns.out", '/usr/bin/python3', "$ROOT/t/app/dns_server.py",
      '--zone', $ZONE, '--port', 0, '--log', $DNS_LOG);
our $DNS_PORT;
eval {
    wait_for('the DNS server', sub { open my $f, '<', "$DIR/dns.out" or return 0; my $l = <$f>; ($DNS_PORT) = ($l // '') =~ /^(\d+)$/ });
    wait_for('redis on [::1]', sub { eval { r6(); 1 } });
    my $r = resp(r6(), 'ACL', 'SETUSER', $ACL_USER, 'on', ">$ACL_PASS", '~*', '+@all');
    die "ACL SETUSER: $r\n" unless $r eq 'OK';
    1;
} or do {
    my $err = $@;
    my $log = join '', map { -f $_ ? `tail -5 $_` : '' } "$DIR/dns.out", $DNS_LOG, "$DIR/redis6.log";
    Test::More::BAIL_OUT("205: $err$log");
};

# ------------------------------------------------------------------ configuration

# The http-level snippet: a resolver (our DNS server unless given), then
# fly_redis and its timeouts (the defaults with quick => 1, else
# scaled(2)).  With readme => 1 the resolver
# is written as in the README and docker/nginx.conf (no resolver_timeout);
# otherwise `resolver_timeout` is set to 5 x $PROMPT, so blocks about other
# things do not depend on its default.
sub http_conf {
    my ($url, %o) = @_;
    my $resolver = exists $o{resolver} ? $o{resolver} : "resolver 127.0.0.1:$DNS_PORT valid=1s;";
    my $timeout = defined $resolver && !$o{readme} ? sprintf('resolver_timeout %dms;', 5000 * $PROMPT) : undef;
    my $redis_timeouts = $o{quick} ? undef
        : sprintf("fly_redis_timeout %dms;\nfly_redis_connect_timeout %dms;", (1000 * scaled(2)) x 2);
    $url =~ s/%%R6_PORT%%/$R6_PORT/g;
    return join "\n", grep { defined && length } $resolver, $timeout, qq{fly_redis "$url";}, $redis_timeouts, '';
}

our $LOC = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    add_header X-Worker $pid always;
    proxy_pass http://app;
}
EOF

# ------------------------------------------------------------------ helpers for blocks

sub get { send_request(path => $_[0], region => 'scl', direct => 1, @_[1 .. $#_]) }

sub miss_then_hit {
    my ($path, $label) = @_;
    my $m = get($path);
    my $h = get($path);
    $path = $label if defined $label;
    is($m->{status}, 200, "$path: 200");
    is($m->{headers}{'x-cache'}, 'MISS', "$path: first request is a MISS");
    is($h->{headers}{'x-cache'}, 'HIT', "$path: second request is a HIT");
    is($h->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "$path: the HIT did not reach the app");
    ok($h->{content} eq $m->{content}, "$path: same body");
    return ($m, $h);
}

# Requests that must be answered by the app (X-Cache ERROR), each quickly.
sub app_answers_with_error {
    my ($path, $n, $what) = @_;
    my $prev = 0;
    for my $i (1 .. $n) {
        my $r = get($path);
        is($r->{status}, 200, "$what: request $i answered 200");
        is($r->{headers}{'x-cache'}, 'ERROR', "$what: request $i is an ERROR");
        my ($size) = $path =~ /size=(\d+)/;
        is(length $r->{content}, $size, "$what: request $i has the app's body");
        cmp_ok($r->{headers}{'x-origin-count'} // 0, '>', $prev, "$what: request $i reached the app");
        $prev = $r->{headers}{'x-origin-count'} // 0;
        cmp_ok($r->{elapsed}, '<', $PROMPT, "$what: request $i done within $PROMPT s (" . sprintf('%.3f', $r->{elapsed}) . ' s)');
    }
}

# Polls $path until a HIT (at most scaled($secs)): returns (the X-Cache values seen, seconds taken).
sub poll_until_hit {
    my ($path, $secs) = @_;
    $secs = scaled($secs);
    my $t0 = time;
    my @seen;
    while (time - $t0 < $secs) {
        my $r = get($path);
        push @seen, $r->{status} == 200 ? ($r->{headers}{'x-cache'} // 'none') : "status $r->{status}";
        last if $seen[-1] eq 'HIT';
        sleep 0.05;
    }
    return (\@seen, time - $t0);
}

# What the poll must show: ERRORs, then the MISS that filled, then the HIT.
sub check_recovery {
    my ($seen, $took, $what) = @_;
    my @s = @$seen;
    is($s[-1], 'HIT', "$what: a HIT after " . sprintf('%.2f', $took) . " s") or diag("seen: @s");
    my @after = grep { $_ ne 'ERROR' } @s;
    is($after[0], 'MISS', "$what: the first answer from Redis was the MISS that filled it") or diag("seen: @s");
    ok(!grep({ !/^(ERROR|MISS|HIT)$/ } @s), "$what: every request answered 200 with a cache status") or diag("seen: @s");
}

# The block's error log of scl has (or lacks) lines matching $re; shows them.
sub log_has {
    my ($re, $name) = @_;
    my @l = grep { $_ =~ $re } split /\n/, block_error_log();
    ok(scalar @l, $name);
    return @l;
}

sub log_lacks {
    my ($re, $name) = @_;
    my @l = grep { $_ =~ $re } split /\n/, block_error_log();
    ok(!@l, $name) or diag(join "\n", @l[0 .. ($#l < 4 ? $#l : 4)]);
}

sub scl_key { "fly:http127.0.0.1$_[0]" }

run_tests(pg => 0, password => $PW);

__DATA__

=== TEST 1: a Redis host name resolved with nginx's resolver, configured as in the README: MISS then HIT
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis.test.internal:${REDIS_PORT}/0', readme => 1)
--- config eval: $main::LOC
--- test
my $off = main::dns_log_size();
my $p = "/big?size=100&t=1&$main::CC";
main::miss_then_hit($p);
is(($t->redis_cli('scl', 'EXISTS', main::scl_key($p)))[0], 1, "the entry is in scl's Redis");
my @q = main::dns_queries_since($off, 'redis.test.internal');
ok((grep { $_->[1] eq 'A' && $_->[2] eq '127.0.0.1' } @q), 'the name was looked up with our DNS server')
    or diag(Test::More::explain(\@q));
main::log_lacks(qr/could not resolve/, 'no resolver error');
my @advice = grep { /redis\.test\.internal.*set "resolver"/ } split /\n/, $t->error_log('scl');
is(scalar @advice, 0, 'no advice to set a "resolver" when one is set') or diag(join "\n", @advice);


=== TEST 2: the same with an explicit resolver_timeout
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis.test.internal:${REDIS_PORT}/0')
--- config eval: $main::LOC
--- test
my $p = "/big?size=150&t=1b&$main::CC";
main::miss_then_hit($p);
is(($t->redis_cli('scl', 'EXISTS', main::scl_key($p)))[0], 1, "the entry is in scl's Redis");
main::log_lacks(qr/could not resolve/, 'no resolver error');


=== TEST 3: AAAA only, as on Fly: the name resolves to ::1, where only the extra Redis listens
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis6.test.internal:%%R6_PORT%%/0')
--- config eval: $main::LOC
--- test
my $off = main::dns_log_size();
my $p = "/big?size=200&t=2&$main::CC";
main::miss_then_hit($p);
is(main::resp(main::r6(), 'EXISTS', main::scl_key($p)), 1, 'the entry is in the Redis on [::1]');
is(($t->redis_cli('scl', 'EXISTS', main::scl_key($p)))[0], 0, "and not in the harness's Redis");
my @q = main::dns_queries_since($off, 'redis6.test.internal');
ok((grep { $_->[1] eq 'AAAA' && $_->[2] eq '::1' } @q), 'AAAA ::1 was answered') or diag(Test::More::explain(\@q));
my $clients = main::resp(main::r6(), 'CLIENT', 'LIST');
like($clients, qr/addr=\[::1\]:\d+ .*cmd=get/, 'nginx is connected over IPv6') or diag($clients);


=== TEST 4: an IPv6 literal URL, no resolver
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@[::1]:%%R6_PORT%%/0', resolver => undef)
--- config eval: $main::LOC
--- test
my $off = main::dns_log_size();
my $p = "/big?size=400&t=4&$main::CC";
main::miss_then_hit($p);
is(main::resp(main::r6(), 'EXISTS', main::scl_key($p)), 1, 'the entry is in the Redis on [::1]');
is(scalar(main::dns_queries_since($off)), 0, 'no DNS query for a literal');


=== TEST 5: re-resolution: a name first pointing where nothing listens, then at the live Redis
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@moving.test.internal:${REDIS_PORT}/0', quick => 1)
--- config eval: $main::LOC
--- test
my $p = "/big?size=500&t=5&$main::CC";
main::app_answers_with_error($p, 3, 'moving.test.internal -> 127.0.0.2');
main::log_has(qr/fly redis connecting to 127\.0\.0\.2 port/, 'it tried 127.0.0.2');
main::log_has(qr/\[error\].*fly redis .*moving\.test\.internal/, 'the failure is logged');
my $off = main::dns_log_size();
main::set_zone(%main::BASE_ZONE, 'moving.test.internal' => { A => ['127.0.0.1'] });
my ($seen, $took) = main::poll_until_hit($p, 10);
main::check_recovery($seen, $took, 'after the DNS answer changed');
my @q = main::dns_queries_since($off, 'moving.test.internal');
ok((grep { $_->[2] eq '127.0.0.1' } @q), 'the name was resolved again and got the new address') or diag(Test::More::explain(\@q));
main::log_has(qr/fly redis connecting to 127\.0\.0\.1 port/, 'and connected to it');
is(($t->redis_cli('scl', 'EXISTS', main::scl_key($p)))[0], 1, "the entry is in scl's Redis");
main::set_zone(%main::BASE_ZONE);


=== TEST 6: NXDOMAIN: the app answers at once (ERROR); once the name exists, the cache works
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@missing.test.internal:${REDIS_PORT}/0', quick => 1)
--- config eval: $main::LOC
--- test
my $p = "/big?size=600&t=6&$main::CC";
main::app_answers_with_error($p, 4, 'NXDOMAIN');
main::log_has(qr/\[error\].*could not resolve "missing\.test\.internal"/, 'logged: could not resolve');
main::set_zone(%main::BASE_ZONE, 'missing.test.internal' => { A => ['127.0.0.1'] });
my ($seen, $took) = main::poll_until_hit($p, 10);
main::check_recovery($seen, $took, 'once the name resolves');
main::set_zone(%main::BASE_ZONE);


=== TEST 7: a DNS server that never answers (default resolver_timeout, 30 s): each request answered by the app within the Redis timeout
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@hung.test.internal:${REDIS_PORT}/0', readme => 1, quick => 1)
--- config eval: $main::LOC
--- test
my $off = main::dns_log_size();
main::app_answers_with_error("/big?size=700&t=7&$main::CC", 5, 'DNS not answering');
ok(scalar(main::dns_queries_since($off, 'hung.test.internal')), 'the queries reached the DNS server (and were dropped)');


=== TEST 8: no DNS server at all (nothing on the resolver's port): ERROR, no hang
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis.test.internal:${REDIS_PORT}/0', resolver => "resolver 127.0.0.1:$main::DEAD_DNS_PORT valid=1s;", quick => 1)
--- config eval: $main::LOC
--- test
main::app_answers_with_error("/big?size=800&t=8&$main::CC", 5, 'DNS down');


=== TEST 9: SELECT: a URL ending in /3 stores the entry in database 3
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis.test.internal:${REDIS_PORT}/3')
--- config eval: $main::LOC
--- test
my $p = "/big?size=900&t=9&$main::CC";
main::miss_then_hit($p);
is(($t->redis_cli('scl', '-n', 3, 'EXISTS', main::scl_key($p)))[0], 1, 'the entry is in database 3');
is(($t->redis_cli('scl', '-n', 0, 'EXISTS', main::scl_key($p)))[0], 0, 'not in database 0');


=== TEST 10: an ACL user (AUTH user password)
--- http_config eval: main::http_conf("redis://$main::ACL_USER:$main::ACL_PASS\@redis6.test.internal:%%R6_PORT%%/0")
--- config eval: $main::LOC
--- test
my $p = "/big?size=1000&t=10&$main::CC";
main::miss_then_hit($p);
is(main::resp(main::r6(), 'EXISTS', main::scl_key($p)), 1, 'the entry is in the Redis on [::1]');
my $clients = main::resp(main::r6(), 'CLIENT', 'LIST');
like($clients, qr/\buser=\Q$main::ACL_USER\E\b/, "nginx is connected as $main::ACL_USER") or diag($clients);


=== TEST 11: a wrong password for the ACL user: ERROR, the app answers, AUTH failed is logged without the password
--- http_config eval: main::http_conf("redis://$main::ACL_USER:wrong-pw-4c1d9e\@redis6.test.internal:%%R6_PORT%%/0", quick => 1)
--- config eval: $main::LOC
--- test
main::app_answers_with_error("/big?size=1100&t=11&$main::CC", 3, 'wrong password');
--- error_log
qr/\[error\].*fly redis .*AUTH failed/
--- no_error_log
wrong-pw-4c1d9e


=== TEST 12: a wrong password for the default user: the same
--- http_config eval: main::http_conf('redis://x:not-the-password-77f2@[::1]:%%R6_PORT%%/0', resolver => undef, quick => 1)
--- config eval: $main::LOC
--- test
main::app_answers_with_error("/big?size=1200&t=12&$main::CC", 3, 'wrong default password');
--- error_log
qr/\[error\].*fly redis .*AUTH failed/
--- no_error_log
not-the-password-77f2


=== TEST 13: 200 requests from concurrent clients: one Redis connection per nginx worker
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis6.test.internal:%%R6_PORT%%/0')
--- config eval: $main::LOC
--- test
my $r6 = main::r6();
my $my_id = main::resp($r6, 'CLIENT', 'ID');
my ($conns0) = main::resp($r6, 'INFO', 'stats') =~ /total_connections_received:(\d+)/;
my @paths = map { "/big?size=" . (100 + $_) . "&t=13&$main::CC" } 1 .. 10;
my @kids;
for my $k (0 .. 7) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => scaled(10));
        open my $out, '>', "$main::DIR/conc-$k.txt" or POSIX::_exit(1);
        for my $i (1 .. 25) {
            my $res = $ua->get($t->nginx_url('scl') . $paths[($i + $k) % @paths]);
            print $out join(' ', $res->{status}, $res->{headers}{'x-worker'} // '-', $res->{headers}{'x-cache'} // '-'), "\n";
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;
my (@lines, %workers, %status);
for my $k (0 .. 7) {
    open my $fh, '<', "$main::DIR/conc-$k.txt" or next;
    push @lines, <$fh>;
}
for (@lines) {
    my ($st, $w, $xc) = split;
    $workers{$w}++;
    $status{"$st $xc"}++;
}
is(scalar @lines, 200, '200 requests answered');
is(scalar(grep { !/^200 (MISS|HIT)$/ } keys %status), 0, 'every one 200, a MISS or a HIT')
    or diag(Test::More::explain(\%status));
cmp_ok($status{'200 HIT'} // 0, '>=', 150, 'mostly HITs') or diag(Test::More::explain(\%status));
is(scalar(keys %workers), 2, 'both workers served requests') or diag(Test::More::explain(\%workers));
# (connections closed along the way would leave CLIENT LIST at once, so wait
# for the count to settle on the number of workers, then compare)
my $nginx_clients = sub { grep { !/\bid=$my_id\b/ } split /\n/, main::resp($r6, 'CLIENT', 'LIST') };
$t->wait_until(sub { scalar(my @c = $nginx_clients->()) == scalar(keys %workers) }, scaled(5));
my @nginx = $nginx_clients->();
is(scalar @nginx, scalar(keys %workers), 'CLIENT LIST: one connection per worker that served requests')
    or diag(join "\n", @nginx);
my ($conns1) = main::resp($r6, 'INFO', 'stats') =~ /total_connections_received:(\d+)/;
is($conns1 - $conns0, scalar @nginx, 'no connection was opened and closed along the way');


=== TEST 14: a cache key over 2048 bytes is not cached (BYPASS, the app answers, logged at info)
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis.test.internal:${REDIS_PORT}/0')
--- config eval: $main::LOC
--- test
my $long = "/big?size=1400&t=14&$main::CC&pad=" . ('x' x 2100);
my $a = main::get($long);
my $b = main::get($long);
for my $r ($a, $b) {
    is($r->{status}, 200, 'answered 200');
    is($r->{headers}{'x-cache'}, 'BYPASS', 'X-Cache: BYPASS');
    is(length $r->{content}, 1400, "the app's body");
}
cmp_ok($b->{headers}{'x-origin-count'}, '>', $a->{headers}{'x-origin-count'}, 'both reached the app');
is(($t->redis_cli('scl', 'EXISTS', main::scl_key($long)))[0], 0, 'nothing stored');
main::log_has(qr/\[info\].*fly_cache: key of \d+ bytes not cached/, 'logged at info');
my $shorter = "/big?size=1400&t=14&$main::CC&pad=" . ('y' x 1900);
main::miss_then_hit($shorter, 'a key of ' . length(main::scl_key($shorter)) . ' bytes');


=== TEST 15: no Redis password was written to any error log
--- http_config eval: main::http_conf('redis://x:${REDIS_PASSWORD}@redis.test.internal:${REDIS_PORT}/0')
--- config eval: $main::LOC
--- test
for my $r ($t->regions) {
    my $log = $t->error_log($r);
    for my $pw ($main::PW, $main::ACL_PASS) {
        ok(index($log, $pw) < 0, "the error log of $r does not hold a password");
    }
}
