#!/usr/bin/env bash
# Runs deploy/systemd/clove-kernel.service under a real systemd on a machine whose PID 1 is
# not systemd (a CI VM, a container host): systemd becomes PID 1 of new pid, mount, cgroup
# and uts namespaces, with private (empty) /run, /tmp, /var/tmp, /var/lib and /var/log, and
# its own cgroup mounts below a sub-cgroup of this shell's cgroups, and starts only the kernel's unit (DefaultDependencies=no in a
# drop-in; container=lxc, so no hardware units). Then it checks, as root:
#
#   * `systemctl start` returns once the kernel sent READY=1 (Type=notify), with its STATUS=;
#   * agents spawn with full isolation under the unit's hardening and Delegate=yes, and see
#     no NOTIFY_SOCKET; `clove demo all` finds every attack contained;
#   * `systemctl stop` shows STOPPING=1's status, waits for an agent's grace, ends with
#     result success and leaves no process and no cgroup behind;
#   * a SIGKILLed kernel is restarted (Restart=on-failure) and brings its agent back;
#   * with WatchdogSec=2s the kernel's pings keep it up, and a frozen kernel is restarted.
#
# Usage: deploy/systemd/try-under-systemd.sh [clove-kernel] [clove]   (needs: apt-get install
# systemd). Prints one line per check and "N passed, N failed"; exit 1 if any failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
pick() { for f in "$target/release/$1" "$target/debug/$1"; do [ -x "$f" ] && { echo "$f"; return; }; done; }
kernel=${1:-$(pick clove-kernel)}
cli=${2:-$(pick clove)}
[ -x "$kernel" ] && [ -x "$cli" ] || { echo "build clove-kernel and clove first, or name them" >&2; exit 1; }
[ -x /lib/systemd/systemd ] || { echo "no /lib/systemd/systemd: apt-get install systemd" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/clove-try-systemd.XXXXXX)
cgname=$(basename "$work")
mkdir -p "$work/units/clove-kernel.service.d" "$work/bin"
cp "$kernel" "$work/bin/clove-kernel"
cp "$cli" "$work/bin/clove"
cp "$root/tests/python/agent_print_env.py" "$root/tests/python/agent_sleep.py" \
    "$root/tests/python/agent_ignore_sigterm.py" "$work/bin/"
cp "$here/clove-kernel.service" "$work/units/"
printf '[Unit]\nDescription=clove unit check\nDefaultDependencies=no\nWants=clove-kernel.service\n' \
    > "$work/units/clove-check.target"
# Only the binary's path and the boot dependencies differ from the shipped unit.
printf '[Unit]\nDefaultDependencies=no\n[Service]\nExecStart=\nExecStart=/run/clove-check/clove-kernel\n' \
    > "$work/units/clove-kernel.service.d/check.conf"

# Inside the namespaces, as their PID 1 until it execs systemd.
cat > "$work/inner.sh" <<EOF
#!/bin/bash
set -eu
mount -t proc proc /proc
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
while read -r name opts fstype; do
    mkdir -p "/sys/fs/cgroup/\$name"
    mount -t "\$fstype" -o "\$opts" cgroup "/sys/fs/cgroup/\$name"
done < "$work/mounts"
mkdir -p /run/systemd/system /run/clove-check
cp -r "$work/units/." /run/systemd/system/
cp "$work/bin/"* /run/clove-check/
# Nothing of the host's state: the unit's StateDirectory, systemd's and the journal's.
for d in /tmp /var/tmp /var/lib /var/log; do mount -t tmpfs -o mode=755 tmpfs "\$d"; done
chmod 1777 /tmp /var/tmp
export container=lxc
exec /lib/systemd/systemd --system --unit=clove-check.target --log-target=null --show-status=no
EOF
chmod +x "$work/inner.sh"

# This shell's cgroup mounts, to mount again inside the cgroup namespace (which shows the
# sub-cgroup below as its root).
: > "$work/mounts"
awk '{ split($0, h, " - "); split(h[1], a, " "); split(h[2], b, " ");
       if (a[5] ~ "^/sys/fs/cgroup/.") print a[5], b[1], b[3] }' /proc/self/mountinfo |
while read -r point fstype super; do
    case "$fstype" in
        cgroup) keep=$(echo "$super" | tr ',' '\n' | grep -vxE 'rw|ro' | paste -sd,) ;;
        cgroup2) keep=defaults ;;
        *) continue ;;
    esac
    case "$keep" in name=*) keep="none,$keep" ;; esac
    echo "${point#/sys/fs/cgroup/} $keep $fstype" >> "$work/mounts"
done

# The sub-cgroups: below our own in every hierarchy (cpuset needs cpus and mems first).
made=()
start_systemd() {
    for m in /sys/fs/cgroup/*/; do
        m=${m%/}
        [ -f "$m/cgroup.procs" ] || continue
        local own
        if [ "$(stat -fc %T "$m")" = cgroup2fs ]; then
            own=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
        else
            own=$(awk -F: -v n="$(basename "$m")" '{split($2, c, ","); for (i in c) if (c[i] == n || c[i] == "name=" n) print $3}' /proc/self/cgroup)
        fi
        local dir="$m${own%/}/$cgname"
        mkdir "$dir"
        made+=("$dir")
        if [ -f "$dir/cpuset.cpus" ]; then
            cat "$(dirname "$dir")/cpuset.cpus" > "$dir/cpuset.cpus"
            cat "$(dirname "$dir")/cpuset.mems" > "$dir/cpuset.mems"
        fi
        echo "$BASHPID" > "$dir/cgroup.procs"
    done
    exec unshare --pid --fork --mount --cgroup --uts --propagation private "$work/inner.sh"
}
( start_systemd ) > "$work/console.log" 2>&1 &
launcher=$!
sdpid=""
cleanup() {
    [ -n "$sdpid" ] && kill -9 "$sdpid" 2>/dev/null || true
    kill -9 "$launcher" 2>/dev/null || true
    wait "$launcher" 2>/dev/null || true
    sleep 0.5
    find /sys/fs/cgroup -depth -type d -path "*/$cgname*" -exec rmdir {} \; 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do
    # The launcher became unshare, whose child became systemd.
    sdpid=$(pgrep -P "$launcher" -x systemd || true)
    [ -n "$sdpid" ] && break
    sleep 0.1
done
[ -n "$sdpid" ] || { echo "systemd did not start:"; cat "$work/console.log"; exit 1; }
in_ns() { nsenter -t "$sdpid" -m -p -u -C -- "$@"; }
clove() { in_ns /run/clove-check/clove --socket /run/clove/clove.sock "$@"; }
prop() { in_ns systemctl show clove-kernel -p "$1" --value; }
for _ in $(seq 100); do in_ns systemctl show -p Version >/dev/null 2>&1 && break; sleep 0.1; done

pass=0 fail=0
check() { # check NAME COMMAND...: one line, PASS or FAIL
    local name=$1; shift
    if "$@"; then echo "PASS: $name"; pass=$((pass + 1)); else echo "FAIL: $name"; fail=$((fail + 1)); fi
}

in_ns systemctl start clove-kernel
check "Type=notify: active after READY=1, STATUS from the kernel" \
    test "$(prop SubState)/$(prop StatusText)" = "running/serving on /run/clove/clove.sock"
check "MainPID is the kernel" test "$(in_ns cat /proc/"$(prop MainPID)"/comm)" = clove-kernel

run_out=$(clove run /run/clove-check/agent_print_env.py --name envp)
sleep 1
env_line=$(clove logs envp)
check "a sandboxed agent runs with full isolation under the unit's hardening" \
    bash -c "grep -qE '^isolation +full' <<< '$run_out' && grep -q '^ENV {' <<< '$env_line'"
check "the agent does not see NOTIFY_SOCKET" bash -c "! grep -q NOTIFY_SOCKET <<< '$env_line'"
check "agents' cgroups are below the service's (Delegate=yes)" \
    bash -c "nsenter -t $sdpid -m -p -u -C -- sh -c 'ls -d /sys/fs/cgroup/*/system.slice/clove-kernel.service/clove-*' >/dev/null 2>&1"

check "clove demo all: every attack contained under the unit" \
    bash -c "nsenter -t $sdpid -m -p -u -C -- /run/clove-check/clove --socket /run/clove/clove.sock demo all > '$work/demo.log' 2>&1"

clove run /run/clove-check/agent_ignore_sigterm.py --name stubborn > /dev/null
clove run /run/clove-check/agent_sleep.py --name durable --restart always > /dev/null
sleep 1
t0=$(date +%s.%N)
in_ns systemctl stop clove-kernel &
stopper=$!
seen_stopping=no
for _ in $(seq 40); do
    [ "$(prop StatusText)" = "shutting down: stopping agents" ] && { seen_stopping=yes; break; }
    sleep 0.1
done
wait "$stopper"
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
check "STOPPING=1 reached systemd during the stop" test "$seen_stopping" = yes
check "the stop waited for the agent's grace (${took}s) and succeeded" \
    bash -c "awk -v t='$took' 'BEGIN { exit !(t > 2.5) }' && [ '$(prop Result)' = success ]"
check "nothing left in the namespace but systemd" \
    test "$(in_ns sh -c 'ps -eo comm=' | grep -cvE '^(systemd|sh|ps|systemd-journal)$')" = 0
check "no cgroup left behind" \
    bash -c "! nsenter -t $sdpid -m -p -u -C -- sh -c 'ls -d /sys/fs/cgroup/*/system.slice/clove-kernel.service' >/dev/null 2>&1"

in_ns systemctl start clove-kernel
check "a restarted kernel brings back its restart-always agent" bash -c "nsenter -t $sdpid -m -p -u -C -- /run/clove-check/clove --socket /run/clove/clove.sock ps | grep -q durable"
in_ns systemctl kill -s SIGKILL --kill-whom=main clove-kernel
for _ in $(seq 100); do [ "$(prop NRestarts)" = 1 ] && [ "$(prop SubState)" = running ] && break; sleep 0.1; done
check "a SIGKILLed kernel is restarted by systemd" test "$(prop NRestarts)/$(prop SubState)" = 1/running
check "... and its agent is back" bash -c "nsenter -t $sdpid -m -p -u -C -- /run/clove-check/clove --socket /run/clove/clove.sock ps | grep -q durable"

in_ns sh -c 'printf "[Service]\nWatchdogSec=2s\n" > /run/systemd/system/clove-kernel.service.d/watchdog.conf'
in_ns systemctl daemon-reload
in_ns systemctl restart clove-kernel
restarts=$(prop NRestarts)
sleep 5
check "watchdog pings keep the kernel up past WatchdogSec" test "$(prop NRestarts)/$(prop SubState)" = "$restarts/running"
in_ns kill -STOP "$(prop MainPID)"
for _ in $(seq 100); do [ "$(prop NRestarts)" != "$restarts" ] && [ "$(prop SubState)" = running ] && break; sleep 0.1; done
check "a frozen kernel misses its pings and is restarted" test "$(prop NRestarts)" != "$restarts"
in_ns systemctl stop clove-kernel

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
