#!/usr/bin/env bash
# The test command of the README: installs what the tests need, checks
# formatting and lints, runs every tier that this machine can run, and
# prints which tiers ran from what the tests recorded (always, also when
# something failed). In CI (CI=true) a tier whose tools this script
# installed must run: a skip there fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tiers whose tools scripts/deps.sh installs (names as the tests record
# them, ignis-testkit/src/tier.rs); Firecracker is not packaged by Debian.
installed=()
if [ "$(id -u)" = 0 ]; then
  scripts/deps.sh
  installed=("e2fsprogs" "live registry" "Debian kernel package" "(b) Linux guest on QEMU"
    "live networking" "root-only wiring" "API conformance")
else
  echo "(not root: skipping package installation; live tiers run only if their tools are present)"
fi

if [ -z "${IGNIS_TEST_KERNEL_DEB:-}" ] && command -v apt-get >/dev/null; then
  IGNIS_TEST_KERNEL_DEB=$(scripts/kernel-deb.sh) || IGNIS_TEST_KERNEL_DEB=
  export IGNIS_TEST_KERNEL_DEB
fi

# The cloud-init live test's Debian 12 image (debootstrap, once per
# machine, cached beside the kernel); without root the test builds or skips.
if [ -z "${IGNIS_TEST_CLOUD_ROOTFS:-}" ] && [ "$(id -u)" = 0 ]; then
  IGNIS_TEST_CLOUD_ROOTFS=$(scripts/cloud-image.sh) || IGNIS_TEST_CLOUD_ROOTFS=
  export IGNIS_TEST_CLOUD_ROOTFS
fi

echo "==> building the static guest init"
scripts/build-guest.sh >/dev/null

mkdir -p target
# What each live test ran or skipped: one line per test, appended by the
# tests themselves.
IGNIS_TEST_RECORDS=$PWD/target/test-records.tsv
export IGNIS_TEST_RECORDS
: >"$IGNIS_TEST_RECORDS"

failed=()
set +e
echo "==> cargo fmt --all --check"
cargo fmt --all --check || failed+=("cargo fmt --check")
echo "==> cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --features ignis-cli/fake-vmm -- -D warnings ||
  failed+=("cargo clippy")
echo "==> cargo nextest run"
cargo nextest run --workspace --features ignis-cli/fake-vmm --no-fail-fast --failure-output final 2>&1 |
  tee target/test.log
[ "${PIPESTATUS[0]}" = 0 ] || failed+=("cargo nextest run")
set -e

# The table, from the records.
echo
echo "Test tiers on this machine (from target/test-records.tsv):"
summary=$(grep -E '^ +Summary' target/test.log | tail -n1 | sed 's/^ *//') || true
printf '  %-32s %s\n' "all tests (nextest)" "${summary:-no summary: see target/test.log}"
tiers=("e2fsprogs" "live registry" "Debian kernel package" "root-only wiring"
  "(b) Linux guest on QEMU" "live networking" "(a) Firecracker + test guest" "API conformance")
for t in "${tiers[@]}"; do
  rows=$(awk -F'\t' -v t="$t" '$1 == t' "$IGNIS_TEST_RECORDS")
  n() { [ -z "$rows" ] && echo 0 || printf '%s\n' "$rows" | awk -F'\t' -v o="$1" '$3 == o' | wc -l; }
  passed=$(n passed) failedn=$(n failed) skipped=$(n skipped)
  if [ -z "$rows" ]; then
    line="NOT RUN (no test recorded this tier)"
  elif [ "$skipped" -gt 0 ] && [ "$passed" = 0 ] && [ "$failedn" = 0 ]; then
    line="SKIPPED: $(printf '%s\n' "$rows" | awk -F'\t' '$3 == "skipped" {print $4}' | sort -u | paste -sd ';' | sed 's/;/; /g')"
  else
    line="ran: $passed passed"
    [ "$failedn" = 0 ] || line+=", $failedn FAILED"
    [ "$skipped" = 0 ] || line+=", $skipped skipped ($(printf '%s\n' "$rows" | awk -F'\t' '$3 == "skipped" {print $4}' | sort -u | paste -sd ';' | sed 's/;/; /g'))"
    notes=$(printf '%s\n' "$rows" | awk -F'\t' '$3 != "skipped" && $4 != "" {print $4}' | sort -u | paste -sd ';' | sed 's/;/; /g')
    [ -z "$notes" ] || line+=" [$notes]"
  fi
  printf '  %-32s %s\n' "$t" "$line"
  if [ "${CI:-}" = true ]; then
    for i in "${installed[@]}"; do
      if [ "$i" = "$t" ] && { [ "$skipped" -gt 0 ] || [ "$passed" = 0 ]; }; then
        failed+=("tier '$t': its tools were installed but it did not run fully (skips: $skipped, passed: $passed)")
      fi
    done
  fi
done

echo "  wall time: $((SECONDS / 60)) min $((SECONDS % 60)) s"

if [ ${#failed[@]} -gt 0 ]; then
  echo
  for f in "${failed[@]}"; do echo "FAILED: $f"; done
  exit 1
fi
