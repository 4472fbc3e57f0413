package FlyEdge::ConfCheck;
# nginx -t of configurations people copy (README blocks, conf/, docker/),
# outside the harness's own skeleton, and what the built module registers
# (its directives and variables) against what README.md documents.
# Used by t/004-readme-config.t, t/011-reference.t and t/012-conf.t.
use strict;
use warnings;
use Exporter 'import';
use POSIX ();
use Test::More;
use File::Path qw(make_path);
use FlyEdge::Topology;

our @EXPORT = qw(slurp spew nginx_blocks free_port sandbox nginx_t check_t
                 module_candidates registered_directives registered_variables
                 readme_directives readme_variables);

sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

sub spew {
    my ($f, $text) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $text;
    close $fh or die "$f: $!";
}

# The ```nginx fenced blocks of a Markdown text: ([line, text], ...).
sub nginx_blocks {
    my ($md) = @_;
    my (@blocks, $cur, $start);
    my $n = 0;
    for my $line (split /\n/, $md) {
        $n++;
        if (!defined $cur && $line =~ /^\s*```\s*nginx\s*$/) { $cur = ''; $start = $n + 1; next }
        if (defined $cur && $line =~ /^\s*```\s*$/) { push @blocks, [$start, $cur]; undef $cur; next }
        $cur .= "$line\n" if defined $cur;
    }
    return @blocks;
}

# A port on loopback that binds now (nginx -t binds its listen sockets).
sub free_port {
    my ($v6) = @_;
    require IO::Socket::IP;
    for (1 .. 100) {
        my $s = IO::Socket::IP->new(LocalHost => $v6 ? '::1' : '127.0.0.1', LocalPort => 0, Listen => 1) or next;
        my $p = $s->sockport;
        close $s;
        return $p;
    }
    die "no free port";
}

# Makes a configuration runnable in $prefix (see the top of the file).
sub sandbox {
    my ($conf, $prefix, $module) = @_;
    $conf =~ s/^(\s*)load_module\s+[^;]+;/$1load_module $module;/mg;
    $conf =~ s{^(\s*listen\s+)(\S+?)((?:\s[^;]*)?);}{
        my ($lead, $addr, $rest) = ($1, $2, $3);
        $lead . ($addr =~ /^\[/ ? '[::1]:' . free_port(1) : '127.0.0.1:' . free_port()) . $rest . ';'
    }mge;
    my @inject;
    for my $t (qw(client_body proxy fastcgi uwsgi scgi)) {
        push @inject, "${t}_temp_path $prefix/tmp/$t;" unless $conf =~ /^\s*${t}_temp_path\s/m;
    }
    push @inject, "access_log $prefix/logs/access.log;" unless $conf =~ /^\s*access_log\s/m;
    my $ins = join '', map { " $_" } @inject;
    $conf =~ s/^(\s*http\s*\{)/$1$ins/m;    # on the same line: line numbers stay the README's
    $conf .= "events {}\n" unless $conf =~ /^\s*events\s*\{/m;
    return $conf;
}

# nginx -t of $file in $prefix with exactly %$env as the environment;
# returns (exit code, output).
sub nginx_t {
    my ($file, $prefix, $env) = @_;
    make_path("$prefix/logs", "$prefix/tmp");
    my @cmd = ($FlyEdge::Topology::NGINX, '-t', '-p', "$prefix/", '-c', $file, '-e', "$prefix/logs/error.log");
    push @cmd, '-g', "pid $prefix/logs/nginx.pid;" unless slurp($file) =~ /^\s*pid\s/m;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        my $preload = $ENV{FLY_EDGE_LD_PRELOAD};
        my %keep = map { exists $ENV{$_} ? ($_ => $ENV{$_}) : () } qw(ASAN_OPTIONS UBSAN_OPTIONS);
        %ENV = (PATH => '/usr/sbin:/usr/bin:/sbin:/bin', %keep, %$env);
        $ENV{LD_PRELOAD} = $preload if $preload;
        alarm 60;                     # survives exec: a hung nginx -t dies
        { exec { $cmd[0] } @cmd }
        print "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($rc, $text);
}

sub check_t {
    my ($name, $rc, $out) = @_;
    is($rc, 0, "$name: nginx -t passes") or return diag($out);
    like($out, qr/test is successful/, "$name: nginx says the test is successful");
    unlike($out, qr/\[(emerg|alert)\]/, "$name: no [emerg] or [alert]");
}


# Words of the built module that may be its directive or variable names:
# every fly_* run of characters in its strings (the linker may have merged
# a name into a longer string, so no word boundary is required).
sub module_candidates {
    my ($module) = @_;
    open my $fh, '<:raw', $module or die "$module: $!";
    local $/;
    my $bin = <$fh>;
    my %seen;
    $seen{$1} = 1 while $bin =~ /(?<![a-z0-9_])(fly_[a-z0-9_]*[a-z0-9])/g;
    return sort keys %seen;
}

# What nginx says of a word used as a directive: it is one unless nginx
# calls it unknown.  $t is a FlyEdge::Topology (its nginx_t renders the
# harness's skeleton with the module loaded).
sub registered_directives {
    my ($t) = @_;
    my @found;
    for my $w (module_candidates($t->module_path)) {
        my ($rc, $out) = $t->nginx_t({ config => "location /probe { $w; }" });
        next if $out =~ /unknown directive "\Q$w\E"/;
        die "nginx -t of \"$w;\" neither passes nor fails on it:\n$out"
            unless $rc == 0 || $out =~ /"\Q$w\E"/;
        push @found, $w;
    }
    return @found;
}

# The same for variables: `return 200 $word` fails nginx -t for an unknown one.
sub registered_variables {
    my ($t) = @_;
    my @found;
    for my $w (module_candidates($t->module_path)) {
        my ($rc, $out) = $t->nginx_t({ config => "location /probe { return 200 \$$w; }" });
        next if $out =~ /unknown "\Q$w\E" variable/;
        die "nginx -t of \$$w:\n$out" unless $rc == 0;
        push @found, $w;
    }
    return @found;
}

# README.md's reference entries: { name => { syntax, default, context, line } }
# for each indented "Syntax:" line (the directive is its first word; more
# forms may follow on indented lines of their own) followed by "Default:"
# and "Context:" lines.
sub readme_directives {
    my ($md) = @_;
    my @lines = split /\n/, $md;
    my %d;
    for my $i (0 .. $#lines) {
        next unless $lines[$i] =~ /^\s+Syntax:\s+(fly_\w+)\b(.*)$/;
        my ($name, $rest) = ($1, $2);
        my $e = { syntax => "$name$rest", line => $i + 1 };
        my $j = $i + 1;
        $j++ while $j <= $#lines && $lines[$j] =~ /^\s+\Q$name\E\b.*;\s*$/;
        ($e->{default}) = ($lines[$j] // '') =~ /^\s+Default:\s+(.*\S)/;
        ($e->{context}) = ($lines[$j + 1] // '') =~ /^\s+Context:\s+(.*\S)/;
        $d{$name} = $e;
    }
    return \%d;
}

# README.md's variables: the `$fly_*` rows of its tables.
sub readme_variables {
    my ($md) = @_;
    my %v;
    $v{$1} = 1 while $md =~ /^\|\s*`\$(fly_\w+)`\s*\|/mg;
    return [sort keys %v];
}

1;
