#!/bin/sh
# Runs inside the rig (rig/rig exec): boots the Linux guest under `vireo run` with every virtio
# device Vireo has, and the host ends they talk to: a TAP device with 10.0.2.1/24 and the
# host-peer.py listener on it, and a vsock socket. The guest runs /scripts/SCRIPT.
#   linux-guest.sh WORKDIR KERNEL VCPUS SCRIPT [more vireo run options]
# WORKDIR holds disk.ext4 and receives peer.log; the sockets live in the rig's /tmp (9p has none).
set -eu
work=$1 kernel=$2 vcpus=$3 script=$4
shift 4
here=$(dirname "$0")
sockets=$(mktemp -d /tmp/vireo-rig.XXXXXX)
tap=vireo-rig0
ip tuntap add dev "$tap" mode tap vnet_hdr
ip addr add 10.0.2.1/24 dev "$tap"
ip link set "$tap" up
python3 "$here/host-peer.py" 10.0.2.1 5000 "$sockets/vsock_5001" "$work/peer.ready" > "$work/peer.log" 2>&1 &
peer=$!
while [ ! -e "$work/peer.ready" ]; do
    kill -0 "$peer" 2>/dev/null || { cat "$work/peer.log" >&2; exit 125; }
    sleep 0.1
done
# With --sandbox among the options the VM runs in its jail, where no host socket is reached: no
# vsock then, and the jailed process is described once it runs (its uid, capabilities, cgroup).
vsock="--vsock cid=3,socket=$sockets/vsock"
case " $* " in
*" --sandbox "*)
    vsock=""
    (for _ in $(seq 300); do
        pid=$(pgrep -f '^/vireo-vmm --jail' | head -n 1)
        # Once it has spent its privilege (it starts as root in the jail, and drops first thing) and is in its group.
        if [ -n "$pid" ] && [ "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" != 0 ] \
            && grep -q /vireo/run/ "/proc/$pid/cgroup" 2>/dev/null; then
            echo "rig: jailed $(grep -E '^(Uid|CapEff):' /proc/$pid/status | tr -s '\t\n' '  ')cgroup $(cat /proc/$pid/cgroup)"
            break
        fi
        sleep 0.1
    done) &
    ;;
esac
status=0
# shellcheck disable=SC2086 # $vsock is two words or none
./vireo run --kernel "$kernel" --initrd .build/images/initramfs.gz --disk "$work/disk.ext4" \
    --net "tap=$tap" $vsock --rng --console virtio \
    --vcpus "$vcpus" --memory 512M --timeout 420 \
    --cmdline "console=ttyS0 panic=1 script=$script" "$@" || status=$?
sleep 0.5
kill "$peer" 2>/dev/null || true
cat "$work/peer.log"
exit $status
