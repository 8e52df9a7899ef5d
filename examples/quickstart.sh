#!/usr/bin/env bash
# The quickstart: plan and apply the examples against the built-in simulators with local
# state. It builds anvil (release), starts `anvil sim bosh` and `anvil sim vault` on free
# loopback ports, then for each example runs plan, apply, and plan again (which must be
# empty), and stops the simulators on exit.
#
#   bash examples/quickstart.sh            # from the repository root
#   ANVIL=target/debug/anvil bash examples/quickstart.sh   # use an existing binary
#
# State goes to state/quickstart.json (null resources) and state/foundation.json (the
# Foundation). The simulators keep everything in memory, so the Foundation's state from
# an earlier run describes deployments that no longer exist: it is started afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${ANVIL:-}" ]]; then
  cargo build --release --quiet
  ANVIL=target/release/anvil
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a simulator on 127.0.0.1:0 and prints the URL from its first line.
start_sim() {
  local name=$1 prefix=$2; shift 2
  "$ANVIL" sim "$name" --listen 127.0.0.1:0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  for _ in $(seq 1 100); do
    if [[ -s "$tmp/$name.out" ]]; then
      head -n1 "$tmp/$name.out" | sed "s|^$prefix||"
      return
    fi
    sleep 0.1
  done
  echo "anvil sim $name did not start:" >&2
  cat "$tmp/$name.err" >&2
  exit 1
}

BOSH_ENVIRONMENT=$(start_sim bosh "anvil sim bosh listening on ")
VAULT_ADDR=$(start_sim vault "anvil sim vault listening on " --token root)
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
