package FlyEdge::Pkg;
# Helpers shared by the packaging tests under t/pkg/ (the Debian package in
# a throwaway root, the images): commands with a clean environment, roots
# mounted in a private mount namespace, processes started and stopped by
# PID, polling with a deadline, a small HTTP client.
use strict;
use warnings;
use Exporter 'import';
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

our @EXPORT = qw(ROOT BUILD run run_ok in_private_mount_namespace mount_overlay mount_proc
                 free_port wait_for spawn stop_pid http_request slurp spew);

my $root = abs_path(dirname(__FILE__) . '/../../../..');
sub ROOT  { $root }
sub BUILD { $ENV{BUILD} // "$root/build" }

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

sub spew {
    my ($f, $text) = @_;
    make_path(dirname($f));
    open my $fh, '>', $f or die "$f: $!";
    print $fh $text;
    close $fh or die "$f: $!";
}

# The environment every command gets: nothing of the caller's but what is
# named (a chroot should not see the host's variables).
sub clean_env {
    my (%extra) = @_;
    return (PATH => '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
            LANG => 'C.UTF-8', %extra);
}

# run([cmd...], env => {...}, timeout => s): (exit code, stdout+stderr).
sub run {
    my ($cmd, %o) = @_;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        %ENV = clean_env(%{$o{env} // {}});
        alarm($o{timeout} // 600);          # survives exec: a hung command dies
        { exec { $cmd->[0] } @$cmd }
        print "exec $cmd->[0]: $!\n";
        POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($rc, $text);
}

# run() that must succeed; dies with the output otherwise.
sub run_ok {
    my ($cmd, %o) = @_;
    my ($rc, $out) = run($cmd, %o);
    die "@$cmd: exit $rc\n$out" if $rc;
    return $out;
}

# Re-executes the test in a mount namespace of its own (private
# propagation): every mount it makes disappears with it, even if it dies.
sub in_private_mount_namespace {
    my (@unshare) = @_;
    return if $ENV{FLY_EDGE_PKG_NS};
    $ENV{FLY_EDGE_PKG_NS} = 1;
    exec 'unshare', '--mount', '--propagation', 'private', @unshare, '--', $^X, map({ "-I$_" } @INC), $0, @ARGV;
    die "unshare: $!";
}

# An overlay of $upper over the read-only $lower at $dir/root; returns it.
sub mount_overlay {
    my ($lower, $dir) = @_;
    remove_tree($dir);
    make_path("$dir/upper", "$dir/work", "$dir/root");
    run_ok(['mount', '-t', 'overlay', 'overlay', '-o',
            "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work", "$dir/root"]);
    return "$dir/root";
}

sub mount_proc {
    my ($root) = @_;
    make_path("$root/proc");
    run_ok(['mount', '-t', 'proc', 'proc', "$root/proc"]);
}

# A TCP port on 127.0.0.1 that is free now.
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

# Polls $cond every 50 ms until it returns true or $secs pass; returns its
# last value.
sub wait_for {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return $v if time >= $deadline;
        sleep 0.05;
    }
}

# Starts [cmd...] in the background with a clean environment (plus env),
# stdout and stderr to $log; returns its PID.
sub spawn {
    my ($cmd, %o) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $o{log} or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        POSIX::setsid();
        %ENV = clean_env(%{$o{env} // {}});
        { exec { $cmd->[0] } @$cmd }
        POSIX::_exit(127);
    }
    return $pid;
}

# Stops a child started by spawn(): $sig, then SIGKILL if it has not exited
# within $secs. Returns its wait status (or undef if it was not ours).
sub stop_pid {
    my ($pid, $sig, $secs) = @_;
    return undef unless $pid;
    kill $sig // 'TERM', $pid;
    my $status;
    my $gone = wait_for($secs // 10, sub { my $r = waitpid($pid, WNOHANG); $status = $? if $r == $pid; $r != 0 });
    if (!$gone) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        $status = $?;
    }
    return $status;
}

# One HTTP/1.0 request to 127.0.0.1:$port: {status, headers => {lc name =>
# value}, body}, or undef when nothing answers.
sub http_request {
    my ($port, $method, $path, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5) or return undef;
    my $body = $o{body} // '';
    my $req = "$method $path HTTP/1.0\r\nHost: " . ($o{host} // 'edge.test') . "\r\n";
    $req .= "$_: $o{headers}{$_}\r\n" for sort keys %{$o{headers} // {}};
    $req .= "Content-Length: " . length($body) . "\r\n" if length $body || $method eq 'POST';
    $req .= "\r\n$body";
    print $s $req;
    local $/;
    my $resp = <$s> // '';
    close $s;
    my ($head, $rest) = split /\r\n\r\n/, $resp, 2;
    return undef unless defined $head && $head =~ m{^HTTP/1\.\d (\d{3})};
    my $status = $1 + 0;
    my %h;
    for my $line (split /\r\n/, $head) {
        $h{lc $1} = $2 if $line =~ /^([^:\s]+):\s*(.*)$/;
    }
    return { status => $status, headers => \%h, body => $rest // '' };
}

1;
