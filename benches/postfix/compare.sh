#!/bin/sh
# Server CPU and throughput under Postfix's own load generator, one table, every row from the
# same run: `smtp-source -s SESSIONS -m MESSAGES -l SIZE -d` (-d: many messages per connection)
# against each target in turn. Targets:
#   smtpd=PATH        smtpd storing into Maildir (group commit) in a temporary directory
#   smtpd-sink=PATH   the same binary with --sink
#   smtpd-nochecks=PATH  --sink --no-checks: no SPF, DKIM, DMARC or ARC, the work smtp-sink
#                     does not do either
#   NAME-sink=PATH    an adapter's sink example (`PATH --listen ADDR`), e.g.
#                     tokio-sink=target/release/examples/tokio_sink: the library alone
#   smtp-sink         Postfix's smtp-sink (`smtp-sink -u nobody ADDR 1000`)
#   postfix           a private Postfix instance on loopback delivering to virtual Maildirs
#                     (its own config directory, queue and mailboxes in a temporary directory)
#   maildir-floor=PATH  no server: benches' `maildir_floor` example writes the same number of
#                     files of the same size into a Maildir (create, write, rename; no sync),
#                     what the kernel charges for the files alone in the same minutes
# A NAME=PATH target with another name runs PATH like smtpd (`old=/tmp/smtpd-main` compares
# two builds). Server CPU is utime+stime of the server's processes, read from /proc before and
# after (for Postfix: the master, its live children and the children it reaped), also shown
# split into user and system time.
#
#   benches/postfix/compare.sh [-s 50] [-m 20000] [-l 1024] TARGET...
#
# The sender is in `.invalid`, as smtp-load's is: SPF is not looked up, so DNS does not set the pace.
#
# Needs postfix (smtp-source, smtp-sink) installed; `postfix` needs root.
set -eu
sessions=50 messages=20000 size=1024
while getopts s:m:l: opt; do
    case $opt in
        s) sessions=$OPTARG ;;
        m) messages=$OPTARG ;;
        l) size=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,21p' "$0"; exit 2; }

work=$(mktemp -d /tmp/smtp-compare.XXXXXX)
# Postfix's unprivileged processes must reach their queue and the mailboxes.
chmod 755 "$work"
server=""
postfix_dir=""
stop() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    server=""
    if [ -n "$postfix_dir" ]; then postfix -c "$postfix_dir" stop >/dev/null 2>&1 || true; fi
    postfix_dir=""
}
trap 'stop; rm -rf "$work"' EXIT INT TERM
ticks=$(getconf CLK_TCK)

# CPU ticks of PID and its live descendants: user (utime+cutime), then system (stime+cstime).
cpu_ticks() {
    user=0 system=0
    for p in $1 $(descendants "$1"); do
        set -- $(awk '{ sub(/.*\) /, ""); print $12 + $14, $13 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0 0)
        user=$((user + $1)) system=$((system + $2))
    done
    echo "$user $system"
}
descendants() {
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    i=0
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "nothing listens on $1" >&2; exit 1; }
        sleep 0.1
    done
}

start_postfix() {
    d=$2
    chmod 755 "$d"
    mkdir -p "$d/mail" "$d/queue" "$d/data"
    chown nobody:nogroup "$d/mail"
    chown postfix "$d/data"
    cat >"$d/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
default_process_limit = 200
alias_maps =
alias_database =
virtual_mailbox_domains = example.test
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = static:example.test/sink/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file = $d/maillog
maillog_file_prefixes = $d
CF
    # The stock services, unchrooted, with smtpd on our port.
    awk -v port="$1" '
        /^[a-z]/ && NF >= 8 { $5 = "n" }
        /^smtp +inet/ { $1 = "127.0.0.1:" port }
        { print }' /usr/share/postfix/master.cf.dist >"$d/master.cf"
    postfix -c "$d" check >/dev/null 2>&1 || true
    postfix -c "$d" start >/dev/null
    postfix_dir=$d
    wait_port "$1"
    server=$(cat "$d/queue/pid/master.pid" | tr -d ' ')
}

delivered_postfix() {
    find "$postfix_dir/mail/example.test/sink/new" -type f 2>/dev/null | wc -l
}

printf '| target | msgs/s | server CPU s | server CPU µs / msg | user | system | msgs / server CPU s | stored |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for target in "$@"; do
    case $target in
        maildir-floor=*)
            out=$("${target#*=}" "$(mktemp -d "$work/floor.XXXXXX")" "$messages" "$size")
            echo "$out" | awk -v n="$messages" '{
                u = $2; s = $5; printf "| maildir-floor | %s | %.2f | %.0f | %.0f | %.0f | %.0f | %d |\n",
                    $7, (u + s) * n / 1e6, u + s, u, s, (u + s > 0 ? 1e6 / (u + s) : 0), n }'
            continue ;;
    esac
    port=$(free_port)
    name=${target%%=*}
    bin=${target#*=}
    # A fresh directory per row: a target named twice starts empty twice.
    dir=$(mktemp -d "$work/$name.XXXXXX")
    case $target in
        smtp-sink) smtp-sink -u nobody "127.0.0.1:$port" 1000 >/dev/null 2>&1 & server=$! ;;
        postfix) start_postfix "$port" "$dir" ;;
        smtpd-sink=*) (cd "$dir" && exec "$bin" --sink --listen "127.0.0.1:$port" 2>/dev/null) & server=$! ;;
        smtpd-nochecks=*) (cd "$dir" && exec "$bin" --sink --no-checks --listen "127.0.0.1:$port" 2>/dev/null) & server=$! ;;
        *-sink=*) (cd "$dir" && exec "$bin" --listen "127.0.0.1:$port" >/dev/null 2>&1) & server=$! ;;
        *=*) (cd "$dir" && exec "$bin" --listen "127.0.0.1:$port" --maildir md 2>/dev/null) & server=$! ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
    wait_port "$port"
    set -- $(cpu_ticks "$server"); user0=$1 system0=$2
    t0=$(date +%s.%N)
    smtp-source -s "$sessions" -m "$messages" -l "$size" -d \
        -f load@smtp-load.invalid -t sink@example.test "127.0.0.1:$port" >/dev/null
    if [ "$target" = postfix ]; then
        # Postfix answers 250 once queued; the row counts until delivered into the Maildirs.
        i=0
        while [ "$(delivered_postfix)" -lt "$messages" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    t1=$(date +%s.%N)
    set -- $(cpu_ticks "$server"); user1=$1 system1=$2
    case $target in
        postfix) stored=$(delivered_postfix) ;;
        smtp-sink|*-sink=*|smtpd-nochecks=*) stored=- ;;
        *) stored=$(find "$dir/md" -path '*/new/*' -type f | wc -l) ;;
    esac
    stop
    awk -v n="$messages" -v t0="$t0" -v t1="$t1" -v u=$((user1 - user0)) \
        -v s=$((system1 - system0)) -v hz="$ticks" -v name="$name" -v stored="$stored" 'BEGIN {
            cpu = (u + s) / hz; secs = t1 - t0
            printf "| %s | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f | %s |\n", name, n / secs, cpu,
                cpu * 1e6 / n, u / hz * 1e6 / n, s / hz * 1e6 / n, (cpu > 0 ? n / cpu : 0), stored }'
done
