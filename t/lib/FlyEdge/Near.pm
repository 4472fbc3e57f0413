package FlyEdge::Near;

# What the near cache tests (t/22x-near-*.t) share: requests straight to a
# region's nginx with the tests' Host, the tier and status of an answer,
# Redis command counts, waiting until an entry is served from the zone, a
# test's own tracking client of a Redis (to learn when that Redis applied a
# change), and the workers' tracking sessions as their debug log shows them.

use strict;
use warnings;

use FlyEdge::Test ();
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

use Exporter 'import';
our @EXPORT = qw(near_get tier cache_of redis_commands until_near app_count
                 tracking_sessions wait_sessions);

our $HOST = 'near.test';

# GET $path straight to $o{region}'s nginx (default atl) with Host near.test.
sub near_get {
    my ($path, %o) = @_;
    return FlyEdge::Test::send_request(method => $o{method} // 'GET', path => $path,
        region => $o{region} // 'atl', direct => 1,
        headers => { Host => $o{host} // $HOST, %{ $o{headers} // {} } },
        timeout => 30);     # scaled by send_request
}

sub tier     { $_[0]{headers}{'x-tier'} // '' }
sub cache_of { $_[0]{headers}{'x-cache'} // '' }

# Commands Redis of region $r has run, but those the test and the tracking
# connections' liveness run themselves (PING, INFO, CLIENT, SUBSCRIBE, AUTH).
sub redis_commands {
    my ($t, $r) = @_;
    my $info = $t->redis($r)->info('commandstats');
    my $n = 0;
    for my $k (keys %$info) {
        next unless $k =~ /^cmdstat_(.+)$/;
        next if $1 =~ /^(ping|info|client\|.*|subscribe|auth|select|hello|command.*)$/;
        my ($calls) = $info->{$k} =~ /calls=(\d+)/;
        $n += $calls // 0;
    }
    return $n;
}

# GETs until one is served from the zone (each must be 200); returns
# [the first answer, the near one] or dies after scaled(10) s.
sub until_near {
    my ($path, %o) = @_;
    my $t = FlyEdge::Test::topology();
    my ($first, $near);
    my $ok = $t->wait_until(sub {
        my $res = near_get($path, %o);
        die "GET $path: status $res->{status}\n" unless $res->{status} == 200;
        $first //= $res;
        return $near = $res if tier($res) eq 'near';
        return 0;
    }, FlyEdge::Test::scaled($o{secs} // 10));
    die "GET $path: never served from the zone\n" unless $ok;
    return ($first, $near);
}

sub app_count {
    my ($r) = @_;
    my $t = FlyEdge::Test::topology();
    my $res = HTTP::Tiny->new(timeout => FlyEdge::Test::scaled(5))->get($t->app_url($r // 'atl') . '/__count');
    return FlyEdge::Test::json_decode($res->{content})->{count};
}

# The tracking sessions region $r's workers began and ended since log
# offset $from: { pid => [events...] }, events "on N" and "ended N: why".
sub tracking_sessions {
    my ($t, $r, $from) = @_;
    my %s;
    for my $line (split /\n/, $t->error_log_since($r, $from // 0)) {
        if ($line =~ /\] (\d+)#\d+: fly near: tracking on, session (\d+) /) {
            push @{ $s{$1} }, "on $2";
        } elsif ($line =~ /\] (\d+)#\d+: fly near: session (\d+) ended: (.*)$/) {
            push @{ $s{$1} }, "ended $2: $3";
        }
    }
    return \%s;
}

# Waits until every worker of region $r that had a session since $from
# logged an event matching $re after it; true when they all did.
sub wait_sessions {
    my ($t, $r, $from, $re, $secs) = @_;
    return $t->wait_until(sub {
        my $s = tracking_sessions($t, $r, $from);
        my @pids = grep { my $p = $_; grep { $p == $_ } $t->nginx_worker_pids($r) } keys %$s;
        return 0 unless @pids;
        return !grep { !grep { $_ =~ $re } @{ $s->{$_} } } @pids;
    }, FlyEdge::Test::scaled($secs // 5));
}

# ---- a test's own tracking client of one Redis ------------------------------
# FlyEdge::Near::Tracker->new($t, $r): a subscriber connection and a data
# connection with CLIENT TRACKING on REDIRECT to it; ->track($key) reads
# the key (so Redis tracks it for us); ->wait_invalidation($key, $secs)
# returns the time() at which the invalidation of $key arrived, or undef.

package FlyEdge::Near::Tracker;

use IO::Select;
use Time::HiRes qw(time);

sub _cmd {
    my (@a) = @_;
    return '*' . @a . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @a);
}

# Every read has a deadline (a hung Redis fails the test, never hangs it).
our $WAIT = FlyEdge::Test::scaled(5);

sub _connect {
    my ($port, $password) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
                                  Timeout => $WAIT) or die "connect to Redis: $!\n";
    $s->autoflush(1);
    my $c = { sock => $s, buf => '' };
    _send($c, 'AUTH', $password);
    my $l = _line($c);
    die "AUTH: $l\n" unless $l =~ /^\+OK/;
    return $c;
}

sub _send {
    my ($c, @a) = @_;
    my $out = _cmd(@a);
    my $s = $c->{sock};
    print $s $out or die "write to Redis: $!\n";
}

# More bytes into $c->{buf} before $deadline; false on timeout or EOF.
sub _fill {
    my ($c, $deadline) = @_;
    my $left = $deadline - time;
    return 0 if $left <= 0;
    return 0 unless IO::Select->new($c->{sock})->can_read($left);
    my $got = sysread($c->{sock}, my $chunk, 65536);
    return 0 unless $got;
    $c->{seen_at} = time;
    $c->{buf} .= $chunk;
    return 1;
}

sub _line {
    my ($c) = @_;
    my $deadline = time + $WAIT;
    while ((my $i = index($c->{buf}, "\r\n")) < 0) {
        _fill($c, $deadline) or die "Redis: no reply\n";
    }
    my $i = index($c->{buf}, "\r\n");
    my $l = substr($c->{buf}, 0, $i);
    substr($c->{buf}, 0, $i + 2) = '';
    return $l;
}

# One RESP2 reply: a string, an array ref, or undef (null).
sub _reply {
    my ($c) = @_;
    my $l = _line($c);
    my ($t, $v) = (substr($l, 0, 1), substr($l, 1));
    return $v if $t eq '+' || $t eq ':';
    die "Redis: $v\n" if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        my $deadline = time + $WAIT;
        while (length($c->{buf}) < $v + 2) { _fill($c, $deadline) or die "Redis: short bulk\n" }
        my $s = substr($c->{buf}, 0, $v);
        substr($c->{buf}, 0, $v + 2) = '';
        return $s;
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [ map { _reply($c) } 1 .. $v ];
    }
    die "Redis: bad reply $l\n";
}

sub new {
    my ($class, $t, $r) = @_;
    my $port = $t->redis_port($r);
    my $sub = _connect($port, $t->redis_password);
    _send($sub, 'CLIENT', 'ID');
    my $id = _reply($sub);
    die "CLIENT ID failed\n" unless defined $id && $id =~ /^\d+$/;
    _send($sub, 'SUBSCRIBE', '__redis__:invalidate');
    my $ack = _reply($sub);
    die "SUBSCRIBE failed\n" unless ref $ack && $ack->[0] eq 'subscribe';
    my $data = _connect($port, $t->redis_password);
    _send($data, 'CLIENT', 'TRACKING', 'on', 'REDIRECT', $id);
    my $ok = _reply($data) // '';
    die "CLIENT TRACKING failed: $ok\n" unless $ok eq 'OK';
    return bless { sub => $sub, data => $data }, $class;
}

# GET $key on the tracking connection (its reply is read and dropped).
sub track {
    my ($self, $key) = @_;
    _send($self->{data}, 'GET', $key);
    _reply($self->{data});
}

# The time() at which the invalidation of $key reached this client (the
# read that brought it), or undef after $secs.
sub wait_invalidation {
    my ($self, $key, $secs) = @_;
    my $c = $self->{sub};
    my $deadline = time + $secs;
    while (1) {
        while (index($c->{buf}, "\r\n") >= 0) {
            my $at = $c->{seen_at};
            my $m = eval { _reply($c) };
            return undef unless $m;
            next unless ref $m && $m->[0] eq 'message';
            my $keys = $m->[2];
            return $at if !defined $keys || grep { $_ eq $key } @$keys;
        }
        _fill($c, $deadline) or return undef;
    }
}

sub close {
    my ($self) = @_;
    close $self->{sub}{sock};
    close $self->{data}{sock};
}

1;
