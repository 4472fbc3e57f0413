# nginx -t checks that every fly_replay_forward names a location of the
# server where it applies (also when inherited from the http or server
# level), and fails naming the directive's file and line.  Where fly_replay
# is off the forward is never used and is not checked.
use FlyEdge::Test;

run_tests(start => 0);

__DATA__

=== TEST 1: a typo in a location's fly_replay_forward fails nginx -t at that line
--- config
fly_replay on;
location / {
    fly_replay_forward @primry;
    proxy_pass http://app;
}
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
--- must_die
--- error_log
qr/\[emerg\] no location "\@primry" in server "localhost", for "fly_replay_forward" in \S*\/conf\/server\.conf:3$/m


=== TEST 2: set at the server level, it is checked for the locations that inherit it
--- config
fly_replay on;
fly_replay_forward @typo always;
location / { proxy_pass http://app; }
location /a/ {
    location /a/b/ { proxy_pass http://app; }
}
location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
--- must_die
--- error_log
qr/\[emerg\] no location "\@typo" in server "localhost", for "fly_replay_forward" in \S*\/conf\/server\.conf:2$/m


=== TEST 3: set at the http level, the server where fly_replay is on must have the location
--- http_config
fly_replay_forward @primary;
--- config
location / {
    fly_replay on;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] no location "\@primary" in server "localhost", for "fly_replay_forward" in \S*\/conf\/http\.conf:1$/m


=== TEST 4: a named location of another server does not count
--- http_config
server {
    listen 127.0.0.1:9;
    server_name other;
    location @primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }
}
--- config
location / {
    fly_replay on;
    fly_replay_forward @primary;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] no location "\@primary" in server "localhost", for "fly_replay_forward" in \S*\/conf\/server\.conf:3$/m


=== TEST 5: a location that turns fly_replay on inherits the check from its parent
--- config
location /w/ {
    fly_replay_forward @nowhere;
    location /w/x/ {
        fly_replay always;
        proxy_pass http://app;
    }
}
--- must_die
--- error_log
qr/\[emerg\] no location "\@nowhere" in server "localhost", for "fly_replay_forward" in \S*\/conf\/server\.conf:2$/m


=== TEST 6: configurations whose forward locations exist pass, in every region
--- test
my @ok = (
    # location level, the named location after the directive
    { config => "fly_replay on;\nlocation / { fly_replay_forward \@primary; proxy_pass http://app; }\n"
                . "location \@primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }\n" },
    # server level, inherited everywhere, with "always"
    { config => "fly_replay on;\nfly_replay_forward \@primary always;\nlocation / { proxy_pass http://app; }\n"
                . "location /a/ { location /a/b/ { proxy_pass http://app; } }\n"
                . "location \@primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }\n" },
    # http level: the harness's control server (fly_replay off there) has no
    # \@primary and needs none
    { http_config => "fly_replay_forward \@primary;\n",
      config => "location / { fly_replay on; proxy_pass http://app; }\n"
                . "location \@primary { proxy_pass http://127.0.0.1:%%NGINX_PORT_SCL%%; }\n" },
    # where fly_replay is off the forward is never used
    { config => "location / { fly_replay_forward \@typo; proxy_pass http://app; }\n" },
    { config => "fly_replay on;\nlocation / { fly_replay off; fly_replay_forward \@typo; proxy_pass http://app; }\n" },
);
for my $i (0 .. $#ok) {
    for my $r ($t->regions) {
        my ($rc, $out) = $t->nginx_t($ok[$i], region => $r);
        is($rc, 0, "configuration " . ($i + 1) . " passes nginx -t in $r") or diag($out);
    }
}
