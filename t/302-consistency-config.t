# nginx -t and the read-your-writes directives (issue 9): a conninfo libpq
# refuses, or one fly-edge cannot use (a socket directory, host lists, no
# host), unset ${VAR}s and unknown regions, bad values and contexts fail
# naming the file and line, and never show a password; the documented
# forms (key/value and URI, {region}, ${VAR}, the primary's default) pass.
use FlyEdge::Test;

run_tests(start => 0);    # nginx -t only

sub nginx_t_ok {
    my ($t, $spec, $name, %opt) = @_;
    my ($rc, $out) = $t->nginx_t($spec, region => $opt{region} // 'scl', env => $opt{env} // {});
    is($rc, 0, "$name: nginx -t passes") or diag($out);
    like($out, qr/test is successful/, "$name: nginx says so");
    return $out;
}

__DATA__

=== TEST 1: a key without "=" (libpq's own message, with the line)
--- http_config
fly_postgres "host=127.0.0.1 port";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": invalid conninfo: missing "=" after "port" in connection info string/
qr{/conf/http\.conf:1$}m


=== TEST 2: an unknown option
--- http_config
fly_postgres "host=127.0.0.1 hots=db";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": invalid conninfo: invalid connection option "hots"/
qr{/conf/http\.conf:1$}m


=== TEST 3: a malformed URI: libpq quotes it, the password is not shown
--- http_config
# the primary
fly_postgres_primary "postgresql://edge:Sup3rSecret@[::1/app";
fly_postgres "host=127.0.0.1";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres_primary": invalid conninfo: .*postgresql:\/\/edge:\*\*\*@\[::1\/app/
qr{/conf/http\.conf:2$}m
--- no_error_log
Sup3rSecret


=== TEST 4: a password from the environment is not shown either
--- http_config
fly_postgres "postgres://edge:${PGPASS}@[fdaa::3:5433/app";
--- env
PGPASS=Hidd3nToo
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": invalid conninfo: /
qr{/conf/http\.conf:1$}m
--- no_error_log
Hidd3nToo


=== TEST 5: an unterminated quote
--- http_config
fly_postgres "host='127.0.0.1 dbname=x";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": invalid conninfo: unterminated quoted string/
qr{/conf/http\.conf:1$}m


=== TEST 6: a Unix-domain socket directory
--- http_config
fly_postgres "host=/var/run/postgresql dbname=app";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": a Unix-domain socket is not supported/
qr{/conf/http\.conf:1$}m


=== TEST 7: no host at all (libpq would use a socket)
--- http_config
fly_postgres "dbname=app user=edge";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": no host: give host= \(a name or an address\) or hostaddr=/


=== TEST 8: host lists, port lists
--- http_config
fly_postgres "host=a.internal,b.internal port=5433";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": a list of hosts is not supported/


=== TEST 9: a port list
--- http_config
fly_postgres "host=a.internal port=5433,5434";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": a list of ports is not supported/


=== TEST 10: a hostaddr that is not an address
--- http_config
fly_postgres "host=db hostaddr=db.internal";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": hostaddr "db\.internal" is not an IP address/


=== TEST 11: an unset ${VAR}
--- http_config
fly_postgres "host=db password=${NO_SUCH_PG_PASSWORD}";
--- env
!NO_SUCH_PG_PASSWORD
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres": environment variable "NO_SUCH_PG_PASSWORD" is not set/
qr{/conf/http\.conf:1$}m


=== TEST 12: {region} with no region known
--- http_config
fly_postgres "host={region}.db.internal port=5433";
--- env
!FLY_REGION
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres" uses \{region\}, but this region is unknown/


=== TEST 13: the primary's default needs the primary region
--- http_config
fly_postgres "host={region}.db.internal port=5433";
--- env
!PRIMARY_REGION
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres" uses \{region\}, but the primary region is unknown/


=== TEST 14: fly_postgres is http-level only
--- config
fly_postgres "host=127.0.0.1";
location / { proxy_pass http://app; }
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres" directive is not allowed here/
qr{/conf/server\.conf:1$}m


=== TEST 15: fly_postgres twice
--- http_config
fly_postgres "host=127.0.0.1";
fly_postgres "host=127.0.0.2";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres" directive is duplicate/
qr{/conf/http\.conf:2$}m


=== TEST 16: fly_postgres_primary without fly_postgres
--- http_config
fly_postgres_primary "host=127.0.0.1";
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres_primary" needs "fly_postgres"/


=== TEST 17: fly_consistency takes off or lsn
--- http_config
fly_postgres "host=127.0.0.1";
--- config
location / {
    fly_consistency on;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_consistency": invalid value "on", expected "off" or "lsn"/
qr{/conf/server\.conf:2$}m


=== TEST 18: fly_consistency_wait takes a time
--- http_config
fly_postgres "host=127.0.0.1";
fly_consistency_wait soon;
--- must_die
--- error_log
qr/\[emerg\] "fly_consistency_wait" directive invalid value/
qr{/conf/http\.conf:2$}m


=== TEST 19: fly_replica_max_lag takes a time or off
--- http_config
fly_postgres "host=127.0.0.1";
--- config
location / {
    fly_replica_max_lag banana;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_replica_max_lag": invalid time "banana", expected a time or "off"/
qr{/conf/server\.conf:2$}m


=== TEST 20: fly_replica_max_lag without fly_postgres, naming where it is
--- config
location / {
    fly_replica_max_lag 5s;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_replica_max_lag" needs "fly_postgres" \(in \S+server\.conf:2\)/


=== TEST 21: fly_consistency lsn needs the regions
--- http_config
fly_postgres "host=127.0.0.1";
fly_consistency lsn;
--- env
!FLY_REGION
--- must_die
--- error_log
qr/\[emerg\] "fly_consistency lsn" needs this region: set "fly_region" or the environment variable FLY_REGION \(in \S+http\.conf:2\)/


=== TEST 22: fly_postgres_timeout, fly_postgres_connect_timeout take times, at the http level
--- http_config
fly_postgres "host=127.0.0.1";
fly_postgres_timeout 1x;
--- must_die
--- error_log
qr/\[emerg\] "fly_postgres_timeout" directive invalid value/


=== TEST 23: the documented forms pass
--- test
my %forms = (
    'key/value, {region}, ${VAR}' => qq{fly_postgres "host={region}.my-db.internal port=5433 dbname=app user=edge password=\${PG_PASSWORD}";},
    'URI, {region}, ${VAR}'       => qq{fly_postgres "postgres://edge:\${PG_PASSWORD}\@{region}.my-db.internal:5433/app?sslmode=prefer";},
    'an explicit primary'         => qq{fly_postgres "host=127.0.0.1 port=5433";\nfly_postgres_primary "postgresql://[::1]:5432/app";},
    'hostaddr with a name'        => qq{fly_postgres "host=db.internal hostaddr=fdaa::3 port=5433";},
    'quoted values'               => qq{fly_postgres "host=127.0.0.1 application_name='my edge' password='a b\\\\'c'";},
);
for my $name (sort keys %forms) {
    main::nginx_t_ok($t, { http_config => "$forms{$name}\nresolver 127.0.0.1:1;\nfly_replay on;\nfly_consistency lsn;\n",
                           config => "location / {\n    fly_consistency_wait 250ms;\n    fly_replica_max_lag 2s;\n    proxy_pass http://app;\n}\nlocation /x { fly_replica_max_lag off; fly_consistency off; }\n" },
                     $name, env => { PG_PASSWORD => 'pw' });
}
# without a resolver, names are looked up at load time (a warning when not found)
my ($rc, $out) = $t->nginx_t({ http_config => qq{fly_postgres "host={region}.my-db.invalid port=5433";} }, region => 'atl');
is($rc, 0, 'names not found at load time: nginx -t still passes');
like($out, qr/\[warn\] .*fly_edge: regional PostgreSQL host "atl\.my-db\.invalid" not found; set "resolver"/,
     'the regional host is in atl');
like($out, qr/\[warn\] .*fly_edge: primary PostgreSQL host "scl\.my-db\.invalid" not found/,
     'the primary in scl');
