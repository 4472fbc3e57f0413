package FlyEdge::FakeServers;

# Test doubles a test file starts for itself, by PID: the fake Redis
# (t/app/fake_redis.py), the tiny DNS server (t/app/dns_server.py) and a
# listener that never answers (t/app/black_hole.py).
# See the POD at the end.

use strict;
use warnings;

use Carp qw(croak);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IPC::Open2 qw(open2);
use Time::HiRes qw(time sleep);

our $APP_DIR = File::Spec->rel2abs(dirname(__FILE__) . '/../../app');
my $OWNER = $$;
my @STARTED;

# Starts `cmd` (which prints its port on stdout, then serves until stdin
# closes or SIGTERM) and returns { pid, port, in, out }.
sub _start {
    my (@cmd) = @_;
    my ($out, $in);
    my $pid = open2($out, $in, @cmd);
    my $port = readline $out;
    unless (defined $port && $port =~ /^(\d+)\s*$/) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
        croak "@cmd did not start";
    }
    my $p = { pid => $pid, port => $1, in => $in, out => $out };
    push @STARTED, $p;
    return $p;
}

sub _stop {
    my ($p) = @_;
    return unless $p->{pid} && $$ == $OWNER;
    kill 'TERM', $p->{pid};
    close $p->{in};
    waitpid $p->{pid}, 0;
    $p->{pid} = undef;
}

END {
    local $?;
    _stop($_) for @STARTED;
}

# ---- the fake Redis ---------------------------------------------------------

# fake_redis(timeout => S): S seconds (default 5) is the timeout of the
# test's own connections to it (command, stats, has).
sub fake_redis {
    my (%opt) = @_;
    my $dir = tempdir('fake-redis-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $self = bless { ctl => "$dir/mode", timeout => $opt{timeout} // 5 }, 'FlyEdge::FakeServers::Redis';
    $self->{proc} = _start('/usr/bin/python3', "$APP_DIR/fake_redis.py", '--control', $self->{ctl});
    return $self;
}

package FlyEdge::FakeServers::Redis;

sub port { $_[0]{proc}{port} }
sub stop { FlyEdge::FakeServers::_stop($_[0]{proc}) }

# How the fake answers from now on (see fake_redis.py): key => value; none
# for the defaults.
sub set_mode {
    my ($self, %m) = @_;
    my $ctl = $self->{ctl};
    open my $fh, '>', "$ctl.tmp" or die "$ctl.tmp: $!";
    print $fh map { "$_=$m{$_}\n" } sort keys %m;
    close $fh or die "$ctl.tmp: $!";
    rename "$ctl.tmp", $ctl or die "rename $ctl: $!";
}

# A FAKE command on a connection of our own (answered in one piece in any
# mode): the reply's value (integer, status or bulk string).
sub command {
    my ($self, @args) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->port, Proto => 'tcp', Timeout => $self->{timeout})
        or die "connect to the fake Redis: $!";
    print $s '*' . (@args + 1) . "\r\n\$4\r\nFAKE\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
    my $line = <$s> // die "the fake Redis closed\n";
    $line =~ s/\r\n$//;
    my $v;
    if ($line =~ /^\$(\d+)$/) { read($s, $v, $1 + 2) == $1 + 2 or die "short read\n"; substr($v, -2) = '' }
    elsif ($line =~ /^[:+](.*)$/) { $v = $1 }
    else { die "FAKE @args: $line\n" }
    close $s;
    return $v;
}

# FAKE STATS as a hash (missing counters are 0).
sub stats {
    my ($self) = @_;
    my %s = map { split /=/, $_, 2 } split /\n/, $self->command('STATS');
    $s{$_} //= 0 for qw(connections clients closed get set late_sent after_silent after_bad);
    return \%s;
}

sub has { $_[0]->command('HAS', $_[1]) }

# ---- the DNS server ---------------------------------------------------------

package FlyEdge::FakeServers;

sub dns_server {
    my ($zone_text) = @_;
    my $dir = tempdir('fake-dns-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $self = bless { zone => "$dir/zone", log => "$dir/dns.log" }, 'FlyEdge::FakeServers::Dns';
    $self->set_zone($zone_text);
    $self->{proc} = _start('/usr/bin/python3', "$APP_DIR/dns_server.py", '--zone', $self->{zone},
                           '--port', 0, '--log', $self->{log});
    return $self;
}

package FlyEdge::FakeServers::Dns;

sub port { $_[0]{proc}{port} }
sub stop { FlyEdge::FakeServers::_stop($_[0]{proc}) }

# The zone, in dns_server.py's text format, replaced atomically.
sub set_zone {
    my ($self, $text) = @_;
    open my $fh, '>', "$self->{zone}.tmp" or die "$self->{zone}.tmp: $!";
    print $fh $text;
    close $fh or die "$self->{zone}.tmp: $!";
    rename "$self->{zone}.tmp", $self->{zone} or die "rename: $!";
}

# The queries logged for `name` so far: ([name, type, answer], ...).
sub queries {
    my ($self, $name) = @_;
    open my $fh, '<', $self->{log} or return ();
    my @q;
    while (<$fh>) {
        next unless /^\S+ query (\S+) (\S+) -> (.*)$/;
        next if defined $name && lc $1 ne lc $name;
        push @q, [$1, $2, $3];
    }
    return @q;
}

# ---- the black hole ---------------------------------------------------------

package FlyEdge::FakeServers;

# A listener on 127.0.0.1 that accepts every connection and never answers.
sub black_hole {
    my $self = bless {}, 'FlyEdge::FakeServers::BlackHole';
    $self->{proc} = _start('/usr/bin/python3', "$APP_DIR/black_hole.py");
    return $self;
}

package FlyEdge::FakeServers::BlackHole;

sub port { $_[0]{proc}{port} }
sub stop { FlyEdge::FakeServers::_stop($_[0]{proc}) }

1;

__END__

=head1 NAME

FlyEdge::FakeServers - the fake Redis, the DNS server and a black hole, started by a test file

=head1 SYNOPSIS

    use FlyEdge::FakeServers;
    my $fake = FlyEdge::FakeServers::fake_redis();     # or fake_redis(timeout => scaled(5))
    my $url = 'redis://127.0.0.1:' . $fake->port . '/0';
    $fake->set_mode(late_key => 'fly:http...', split => 7);   # see t/app/fake_redis.py
    $fake->set_mode();                                         # back to the defaults
    my $st = $fake->stats;          # { clients, closed, get, late_sent, ... }
    $fake->has($key);               # 1 or 0

    my $dns = FlyEdge::FakeServers::dns_server("hung.test.internal DROP\n");
    my $resolver = 'resolver 127.0.0.1:' . $dns->port . ' valid=1s;';
    $dns->set_zone("redis.test.internal A 127.0.0.1\n");
    my @q = $dns->queries('redis.test.internal');

    my $bh = FlyEdge::FakeServers::black_hole();   # accepts, never answers
    my $url = 'redis://127.0.0.1:' . $bh->port . '/0';

=head1 DESCRIPTION

Each server runs as a child of the test (C<open2>, reading the port it
prints), in its own temp directory, and is stopped by its PID (SIGTERM,
and its stdin closed) when the test file ends, or with C<stop>.  The
scripts also exit when their parent goes away.

=cut
