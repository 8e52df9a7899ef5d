#!/usr/bin/env bash
# The quickstart: plan and apply the examples against the built-in simulators with local
# state. It builds anvil (release), starts `anvil sim bosh` and `anvil sim vault` on free
# loopback ports, then for each example runs plan, apply, and plan again (which must be
# empty), and stops the simulators on exit (also on Ctrl-C or a failed step).
#
#   bash examples/quickstart.sh                             # from a clone of anvil
#   CARGO_TARGET_DIR=/tmp/t bash examples/quickstart.sh     # cargo builds (and it runs) there
#   ANVIL_SKIP_BUILD=1 bash examples/quickstart.sh          # use the release binary already built
#   ANVIL=target/debug/anvil bash examples/quickstart.sh    # use this binary, no cargo at all
#
# The binary is the one cargo builds: `cargo metadata` says where cargo's target directory
# is (CARGO_TARGET_DIR and build.target-dir are honoured), and the script runs
# TARGET_DIR/release/anvil from there, saying so when it is missing.
#
# State goes to state/quickstart.json (null resources) and state/foundation.json (the
# Foundation). The simulators keep everything in memory, so the Foundation's state from
# an earlier run describes deployments that no longer exist: it is started afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
tmp=$(mktemp -d)
# The simulators' process ids. They are started from this shell (never inside `$(…)`, a
# subshell whose changes to this array would be lost), so cleanup can stop them.
pids=()
cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  # Wait, so no simulator outlives the script (and its port is free when it returns).
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# Bash runs the EXIT trap on `exit`, not when killed by a signal: turn signals into exits.
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
  echo "quickstart: $*" >&2
  exit 1
}

# Where cargo puts what it builds, from `cargo metadata` (honours CARGO_TARGET_DIR).
target_dir() {
  local meta dir
  if ! meta=$("$cargo" metadata --format-version 1 --no-deps 2>"$tmp/metadata.err"); then
    cat "$tmp/metadata.err" >&2
    die "\`$cargo metadata\` failed in $PWD, so the script cannot tell where cargo builds anvil: run it from a clone of anvil with cargo installed, or set ANVIL=/path/to/anvil"
  fi
  dir=$(printf '%s' "$meta" | grep -o '"target_directory":"[^"]*"' | head -n1 |
    sed -e 's/^"target_directory":"//' -e 's/"$//')
  [[ -n "$dir" ]] || die "\`$cargo metadata\` did not say where cargo's target directory is; set ANVIL=/path/to/anvil"
  printf '%s\n' "$dir"
}

if [[ -n "${ANVIL:-}" ]]; then
  if [[ "$ANVIL" != */* ]]; then
    # A bare name: the binary on PATH, as a shell would run it.
    ANVIL=$(command -v "$ANVIL") || die "ANVIL=$ANVIL: no such command on PATH; set ANVIL to the path of the anvil binary"
  fi
  [[ -f "$ANVIL" && -x "$ANVIL" ]] ||
    die "ANVIL=$ANVIL is not an executable file: build anvil with \`cargo build --release\` or point ANVIL at the binary"
else
  dir=$(target_dir)
  if [[ "${ANVIL_SKIP_BUILD:-}" != 1 ]]; then
    echo "Building anvil: $cargo build --release (target directory $dir)"
    "$cargo" build --release --quiet --bin anvil
  fi
  ANVIL=$dir/release/anvil
  if [[ ! -f "$ANVIL" || ! -x "$ANVIL" ]]; then
    from="cargo's target directory"
    [[ -n "${CARGO_TARGET_DIR:-}" ]] && from="CARGO_TARGET_DIR"
    die "no anvil binary at $ANVIL ($dir is $from): build it with \`cargo build --release\` (drop ANVIL_SKIP_BUILD=1), or set ANVIL=/path/to/anvil"
  fi
fi
echo "Using $ANVIL"

# Starts a simulator on 127.0.0.1:0 in the background. Runs in this shell, so its pid is
# recorded for cleanup.
start_sim() {
  local name=$1
  shift
  "$ANVIL" sim "$name" --listen 127.0.0.1:0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  echo $! >"$tmp/$name.pid"
}

# Prints the URL a started simulator announces on its first line (reads files only, so
# it may run in a subshell).
sim_url() {
  local name=$1 prefix=$2 pid
  pid=$(cat "$tmp/$name.pid")
  for _ in $(seq 1 100); do
    # A whole first line: the announcement is written with its newline.
    if [[ $(wc -l <"$tmp/$name.out") -ge 1 ]]; then
      head -n1 "$tmp/$name.out" | sed "s|^$prefix||"
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "anvil sim $name did not start:" >&2
  cat "$tmp/$name.err" >&2
  exit 1
}

start_sim bosh
start_sim vault --token root
BOSH_ENVIRONMENT=$(sim_url bosh "anvil sim bosh listening on ")
VAULT_ADDR=$(sim_url vault "anvil sim vault listening on ")
export BOSH_ENVIRONMENT VAULT_ADDR
export BOSH_CLIENT=admin BOSH_CLIENT_SECRET=admin VAULT_TOKEN=root
unset BOSH_CA_CERT VAULT_CACERT VAULT_NAMESPACE VAULT_ROLE_ID VAULT_SECRET_ID ANVIL_STATE
echo "BOSH Director simulator: $BOSH_ENVIRONMENT"
echo "Vault simulator:         $VAULT_ADDR"

rm -f state/foundation.json state/foundation.json.backup state/foundation.json.journal

for example in examples/quickstart examples/foundation; do
  echo
  echo "=== $example: plan"
  "$ANVIL" plan "$example"
  echo
  echo "=== $example: apply"
  "$ANVIL" apply --auto-approve "$example"
  echo
  echo "=== $example: plan again (nothing to do)"
  "$ANVIL" plan --detailed-exitcode "$example"
done

echo
echo "=== the Director now runs:"
"$ANVIL" state list --workspace foundation | grep '^bosh_deployment\.' || true
echo
echo "Quickstart done: state is in state/quickstart.json and state/foundation.json."
echo "README.md shows how to keep the simulators running and try drift, import and reconcile."
