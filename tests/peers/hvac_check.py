#!/usr/bin/env python3
"""Peer-client acceptance check of `anvil sim vault` with the unmodified `hvac` client.

Usage: hvac_check.py [ADDR [TOKEN]]   (defaults: $VAULT_ADDR, $VAULT_TOKEN)
Exits 0 when every step behaves as with a real Vault, 1 with a message otherwise.
"""
import os
import sys
import warnings

import hvac
import hvac.exceptions as hx

warnings.simplefilter("ignore")  # hvac's deprecation notices are not our concern


def fail(msg):
    print(f"hvac_check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VAULT_ADDR")
    token = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("VAULT_TOKEN")
    if not addr or not token:
        fail("give ADDR and TOKEN as arguments or VAULT_ADDR / VAULT_TOKEN")

    client = hvac.Client(url=addr, token=token)
    kv = client.secrets.kv.v2

    # health, without a token
    health = hvac.Client(url=addr).sys.read_health_status(method="GET")
    expect(isinstance(health, dict), f"health is not JSON: {health!r}")
    expect(health.get("initialized") is True and health.get("sealed") is False,
           f"unexpected health: {health}")
    expect(client.is_authenticated(), "is_authenticated() is False with the root token")
    expect(not hvac.Client(url=addr, token="wrong").is_authenticated(),
           "a wrong token is authenticated")

    # write, then write with cas
    r = kv.create_or_update_secret(path="hvac/app", secret={"user": "u1"}, cas=0)
    expect(r["data"]["version"] == 1, f"first write is not version 1: {r}")
    r = kv.create_or_update_secret(path="hvac/app", secret={"user": "u2"}, cas=1)
    expect(r["data"]["version"] == 2, f"cas=1 write is not version 2: {r}")
    r = kv.create_or_update_secret(path="hvac/other", secret={"x": "y"})
    expect(r["data"]["version"] == 1, f"plain write: {r}")

    # a check-and-set conflict
    try:
        kv.create_or_update_secret(path="hvac/app", secret={"user": "x"}, cas=1)
        fail("a stale cas was accepted")
    except hx.InvalidRequest as e:
        expect("check-and-set parameter did not match the current version" in str(e),
               f"CAS conflict message: {e}")

    # reads: latest and version=1
    r = kv.read_secret_version(path="hvac/app", raise_on_deleted_version=True)
    expect(r["data"]["data"] == {"user": "u2"}, f"latest read: {r}")
    expect(r["data"]["metadata"]["version"] == 2, f"latest version: {r}")
    r = kv.read_secret_version(path="hvac/app", version=1, raise_on_deleted_version=True)
    expect(r["data"]["data"] == {"user": "u1"}, f"version=1 read: {r}")
    try:
        kv.read_secret_version(path="hvac/never", raise_on_deleted_version=True)
        fail("reading a never-written key did not raise")
    except hx.InvalidPath:
        pass

    # patch (hvac reads, merges and writes with cas)
    r = kv.patch(path="hvac/app", secret={"pass": "p"})
    expect(r["data"]["version"] == 3, f"patch: {r}")
    r = kv.read_secret_version(path="hvac/app", raise_on_deleted_version=True)
    expect(r["data"]["data"] == {"user": "u2", "pass": "p"}, f"after patch: {r}")

    # list
    r = kv.list_secrets(path="")
    expect(r["data"]["keys"] == ["hvac/"], f"list of the root: {r}")
    r = kv.list_secrets(path="hvac")
    expect(r["data"]["keys"] == ["app", "other"], f"list of hvac/: {r}")
    try:
        kv.list_secrets(path="empty")
        fail("listing an empty folder did not raise")
    except hx.InvalidPath:
        pass

    # soft delete of the latest version
    kv.delete_latest_version_of_secret(path="hvac/app")
    try:
        kv.read_secret_version(path="hvac/app", raise_on_deleted_version=True)
        fail("reading a soft-deleted version did not raise")
    except hx.InvalidPath:
        pass
    r = kv.read_secret_version(path="hvac/app", raise_on_deleted_version=False)
    expect(r["data"]["data"] is None and r["data"]["metadata"]["deletion_time"] != "",
           f"soft-deleted read without raising: {r}")
    kv.undelete_secret_versions(path="hvac/app", versions=[3])
    r = kv.read_secret_version(path="hvac/app", raise_on_deleted_version=True)
    expect(r["data"]["metadata"]["version"] == 3, f"after undelete: {r}")
    kv.delete_secret_versions(path="hvac/app", versions=[1])

    # destroy
    kv.destroy_secret_versions(path="hvac/app", versions=[2])
    try:
        kv.read_secret_version(path="hvac/app", version=2, raise_on_deleted_version=True)
        fail("reading a destroyed version did not raise")
    except hx.InvalidPath:
        pass

    # metadata
    kv.update_metadata(path="hvac/app", max_versions=5, cas_required=True,
                       custom_metadata={"owner": "anvil"})
    md = kv.read_secret_metadata(path="hvac/app")["data"]
    expect(md["current_version"] == 3, f"current_version: {md}")
    expect(md["max_versions"] == 5 and md["cas_required"] is True, f"settings: {md}")
    expect(md["custom_metadata"] == {"owner": "anvil"}, f"custom_metadata: {md}")
    expect(md["versions"]["2"]["destroyed"] is True, f"versions.2: {md}")
    expect(md["versions"]["1"]["deletion_time"] != "", f"versions.1: {md}")
    expect(md["versions"]["3"]["deletion_time"] == "", f"versions.3: {md}")
    try:
        kv.create_or_update_secret(path="hvac/app", secret={"a": "b"})
        fail("a write without cas was accepted with cas_required")
    except hx.InvalidRequest as e:
        expect("check-and-set parameter required for this call" in str(e), f"{e}")

    # delete everything; afterwards cas=0 works again
    kv.delete_metadata_and_all_versions(path="hvac/app")
    try:
        kv.read_secret_metadata(path="hvac/app")
        fail("metadata survived delete_metadata_and_all_versions")
    except hx.InvalidPath:
        pass
    r = kv.create_or_update_secret(path="hvac/app", secret={"again": "1"}, cas=0)
    expect(r["data"]["version"] == 1, f"cas=0 after deleting metadata: {r}")

    # mounts
    mounts = client.sys.list_mounted_secrets_engines()
    expect(mounts["data"]["secret/"]["options"]["version"] == "2", f"mounts: {mounts}")

    # a bad token is refused
    try:
        hvac.Client(url=addr, token="wrong").secrets.kv.v2.read_secret_version(
            path="hvac/app", raise_on_deleted_version=True)
        fail("a wrong token could read")
    except hx.Forbidden:
        pass

    print("hvac_check: OK")


if __name__ == "__main__":
    main()
