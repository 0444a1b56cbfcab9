#!/usr/bin/env bash
# The test command of the README: installs what the tests need, runs every
# tier that this machine can run, and says which tiers ran.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  scripts/deps.sh
else
  echo "(not root: skipping package installation; live tiers run only if their tools are present)"
fi

if [ -z "${IGNIS_TEST_KERNEL_DEB:-}" ] && command -v apt-get >/dev/null; then
  IGNIS_TEST_KERNEL_DEB=$(scripts/kernel-deb.sh target/kernel 2>/dev/null || true)
  export IGNIS_TEST_KERNEL_DEB
fi

echo "==> building the static guest init"
scripts/build-guest.sh >/dev/null

mkdir -p target
cargo nextest run --workspace --features ignis-cli/fake-vmm --no-fail-fast --failure-output final 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}

echo
echo "Test tiers on this machine:"
have() { command -v "$1" >/dev/null 2>&1; }
echo "  unit + wire (no root, fakes) ............ ran"
if have mkfs.ext4 && have debugfs; then echo "  e2fsprogs (real ext4 image disks) ....... ran"; else echo "  e2fsprogs ............................... SKIPPED: mkfs.ext4/debugfs missing"; fi
if have docker-registry && have skopeo; then echo "  live registry (docker-registry) ......... ran"; else echo "  live registry ........................... SKIPPED: docker-registry or skopeo missing"; fi
if [ -n "${IGNIS_TEST_KERNEL_DEB:-}" ]; then echo "  Debian kernel package .................. ran ($(basename "$IGNIS_TEST_KERNEL_DEB"))"; else echo "  Debian kernel package .................. SKIPPED: IGNIS_TEST_KERNEL_DEB unset"; fi
echo "  VM lifecycle on the fake VMM ........... ran (+ snapshots, manifests, daemon API, GitOps over file:// and git daemon, crash/restart)"
if have qemu-system-x86_64 && [ -n "${IGNIS_TEST_KERNEL_DEB:-}" ]; then
  echo "  (b) live Linux guest on QEMU ........... ran ($(grep -q vmx /proc/cpuinfo && echo KVM or TCG || echo TCG))"
  echo "  (b) guest agent on QEMU ................ ran (exec, 20 concurrent, 200 MB cp, -t, hooks, stop via agent)"
else
  echo "  (b) live Linux guest on QEMU ........... SKIPPED: qemu-system-x86_64 or the kernel package missing"
fi
if [ "$(id -u)" = 0 ] && have qemu-system-x86_64 && have nft && [ -n "${IGNIS_TEST_KERNEL_DEB:-}" ]; then
  echo "  live networking in test netns ........... ran (bridge, -p, VM-to-VM, NAT, 200 create/rm, --ssh with dropbear, snapshot + 5 forks)"
else
  echo "  live networking in test netns ........... SKIPPED: needs root, qemu, nft and the kernel package"
fi
echo "  crash safety (fault injection) .......... ran (SIGKILL at create/start/snapshot/fork/rm/import points, system check/prune)"
echo "  bounded fuzz of every decoder ........... ran (agent frames, image JSON, tar layers, YAML manifests, API bodies; IGNIS_FUZZ_SECS each)"
if [ -n "${IGNIS_FIRECRACKER:-}" ] || have firecracker; then
  fc=${IGNIS_FIRECRACKER:-$(command -v firecracker)}
  if [ -x "$(dirname "$fc")/jailer" ] || [ -n "${IGNIS_JAILER:-}" ] || have jailer; then jail="under its jailer"; else jail="NO jailer found: unjailed"; fi
  echo "  (a) Firecracker + test guest ........... ran ($("$fc" --version 2>/dev/null | head -1), $jail: run, logs, ps, stop, rm, cgroup, crash, snapshot + 10 forks)"
else
  echo "  (a) Firecracker + test guest ........... SKIPPED: no firecracker binary on PATH or in IGNIS_FIRECRACKER"
fi
exit "$status"
