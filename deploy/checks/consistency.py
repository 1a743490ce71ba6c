#!/usr/bin/python3
"""What no linter knows: that the deployment files agree with each other.

Usage: consistency.py RENDERED_DIR   (RENDERED_DIR holds `kubectl kustomize` output per
overlay, <region>.yaml, as deploy/checks/run.sh writes it)

* Compose: every file it mounts exists; each region's published host port is the port
  of `listen` in its region file (deploy/regions/<r>.toml, also the local demo's) and
  the README's quick-start table; the container port, MERIDIAN_LISTEN, the health
  check and Prometheus's targets all use the image's registry port; gRPC advertise
  and join addresses use the image's gRPC port and name compose services.
* Dockerfile: EXPOSE and MERIDIAN_LISTEN/GRPC_LISTEN agree; every COPY source exists;
  every workspace member is copied; it builds with the very `cargo build` command the
  README gives.
* Kubernetes (rendered): the config in each overlay's ConfigMap listens on the ports
  the StatefulSet declares; probes and Services point at declared ports; every volume
  mounted is defined; the config's data_dir is the PersistentVolumeClaim's mount and
  its TLS files are under a mounted Secret; the ConfigMap and Secrets the pods use
  exist or are documented in deploy/kubernetes/README.md.
"""

import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
errors = []


def fail(msg):
    errors.append(msg)


def port_of(addr):
    """The port of `host:port` or `scheme://host:port[/…]`."""
    m = re.search(r":(\d+)(/.*)?$", str(addr))
    return int(m.group(1)) if m else None


def host_of(addr):
    addr = re.sub(r"^[a-z]+://", "", str(addr))
    return addr.rsplit(":", 1)[0]


def load_toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


# ---------------------------------------------------------------- Dockerfile
dockerfile = (DEPLOY / "Dockerfile").read_text()
readme = (ROOT / "README.md").read_text()
expose = set()
for line in dockerfile.splitlines():
    if line.startswith("EXPOSE "):
        expose |= {int(p.split("/")[0]) for p in line.split()[1:]}
env = dict(re.findall(r"(MERIDIAN_[A-Z_]+)=(\S+)", dockerfile))
http_port = port_of(env.get("MERIDIAN_LISTEN", ""))
grpc_port = port_of(env.get("MERIDIAN_GRPC_LISTEN", ""))
if http_port is None or grpc_port is None:
    fail("Dockerfile: MERIDIAN_LISTEN and MERIDIAN_GRPC_LISTEN must be set in ENV")
elif expose != {http_port, grpc_port}:
    fail(f"Dockerfile: EXPOSE {sorted(expose)} but the node listens on {http_port} and {grpc_port}")

builds = re.findall(r"cargo build [^\n\\&;]*", dockerfile)
if not builds:
    fail("Dockerfile: no `cargo build`")
for b in builds:
    b = b.strip()
    if b not in readme:
        fail(f"Dockerfile builds with `{b}`, which the README does not give")

copied = set()
for line in dockerfile.splitlines():
    parts = line.split()
    if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
        continue
    for src in [p for p in parts[1:-1] if not p.startswith("--")]:
        copied.add(src.rstrip("/"))
        if not (ROOT / src).exists():
            fail(f"Dockerfile copies {src}, which does not exist")
members = load_toml(ROOT / "Cargo.toml")["workspace"]["members"]
for m in members:
    if m not in copied:
        fail(f"Dockerfile does not copy workspace member {m} (cargo reads every member's manifest)")

# ---------------------------------------------------------------- region files + README
region_files = {p.stem: load_toml(p) for p in sorted((DEPLOY / "regions").glob("*.toml"))}
for region, conf in region_files.items():
    if conf.get("region") != region:
        fail(f"deploy/regions/{region}.toml names region {conf.get('region')!r}")
    row = re.search(rf"^\| {region} \| `([^`]+)` \| `([^`]+)` \|", readme, re.M)
    if not row:
        fail(f"README quick-start table has no row for {region}")
    elif (row.group(1), row.group(2)) != (conf["listen"], conf["grpc_listen"]):
        fail(f"README says {region} is {row.group(1)} / {row.group(2)}, its region file {conf['listen']} / {conf['grpc_listen']}")

# ---------------------------------------------------------------- compose
compose_path = DEPLOY / "docker-compose.yml"
compose = yaml.safe_load(compose_path.read_text())
services = compose["services"]
nodes = {name: s for name, s in services.items() if "MERIDIAN_GRPC_LISTEN" in (s.get("environment") or {})}
if set(nodes) != set(region_files):
    fail(f"compose runs regions {sorted(nodes)}, deploy/regions has {sorted(region_files)}")
for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith((".", "/")) and not (compose_path.parent / src).exists():
            fail(f"compose service {name} mounts {src}, which does not exist")
for name, svc in nodes.items():
    e = svc["environment"]
    if port_of(e["MERIDIAN_LISTEN"]) != http_port or port_of(e["MERIDIAN_GRPC_LISTEN"]) != grpc_port:
        fail(f"compose {name}: listens on {e['MERIDIAN_LISTEN']} / {e['MERIDIAN_GRPC_LISTEN']}, the image on {http_port} / {grpc_port}")
    if port_of(e["MERIDIAN_ADVERTISE_GRPC_ADDR"]) != grpc_port or host_of(e["MERIDIAN_ADVERTISE_GRPC_ADDR"]) != name:
        fail(f"compose {name}: advertises gRPC {e['MERIDIAN_ADVERTISE_GRPC_ADDR']}, not {name}:{grpc_port}")
    for join in filter(None, str(e.get("MERIDIAN_JOIN", "")).split(",")):
        if host_of(join) not in nodes or port_of(join) != grpc_port:
            fail(f"compose {name}: joins {join}, not a node service on the gRPC port")
    published = [p for p in svc.get("ports", []) if str(p).endswith(f":{http_port}")]
    if len(published) != 1:
        fail(f"compose {name}: expected one published port onto {http_port}, got {svc.get('ports')}")
        continue
    host_port = int(str(published[0]).split(":")[-2])
    conf = region_files.get(name, {})
    if host_port != port_of(conf.get("listen", "")):
        fail(f"compose {name}: published on {host_port}, its region file listens on {conf.get('listen')}")
    for key in ("MERIDIAN_ADVERTISE_HTTP_ADDR", "MERIDIAN_PUBLIC_URL"):
        if key in e and port_of(e[key]) != host_port:
            fail(f"compose {name}: {key}={e[key]} is not the published port {host_port}")
    mounts = [v for v in svc.get("volumes", []) if v.startswith("./regions/")]
    if mounts != [f"./regions/{name}.toml:/etc/meridian/region.toml:ro"]:
        fail(f"compose {name}: mounts {mounts}, not its own region file")
    health = " ".join(svc.get("healthcheck", {}).get("test", []))
    if f"/{http_port}" not in health or "/readyz" not in health:
        fail(f"compose {name}: the health check does not ask /readyz on {http_port}")
prom = services.get("prometheus")
if prom:
    prom_conf = yaml.safe_load((compose_path.parent / "compose/prometheus.yml").read_text())
    targets = {t for sc in prom_conf["scrape_configs"] for c in sc["static_configs"] for t in c["targets"]}
    if targets != {f"{n}:{http_port}" for n in nodes}:
        fail(f"prometheus scrapes {sorted(targets)}, the nodes serve /metrics on {sorted(f'{n}:{http_port}' for n in nodes)}")

# ---------------------------------------------------------------- Kubernetes (rendered)
rendered = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None
k8s_readme = (DEPLOY / "kubernetes/README.md").read_text() if (DEPLOY / "kubernetes/README.md").exists() else ""
overlays = sorted(p.name for p in (DEPLOY / "kubernetes/overlays").iterdir() if p.is_dir())
if not overlays:
    fail("deploy/kubernetes/overlays has no overlay")
for region in overlays:
    path = rendered / f"{region}.yaml" if rendered else None
    if not path or not path.exists():
        fail(f"no rendered manifests for overlay {region}")
        continue
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    sets = kinds.get("StatefulSet", [])
    if len(sets) != 1:
        fail(f"{region}: expected one StatefulSet, got {len(sets)}")
        continue
    sts = sets[0]
    pod = sts["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == "meridian"] or pod["containers"]
    c = containers[0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    port_numbers = set(ports.values())
    configmaps = {d["metadata"]["name"]: d for d in kinds.get("ConfigMap", [])}
    secrets_defined = {d["metadata"]["name"] for d in kinds.get("Secret", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    for mount_path, vol in mounts.items():
        if vol not in volumes and vol not in claims:
            fail(f"{region}: {mount_path} mounts volume {vol}, which is not defined")

    # The config file the pod reads: from the ConfigMap mounted over its directory.
    args = c.get("args", []) + c.get("command", [])
    config_path = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), None)
    conf = None
    if not config_path:
        fail(f"{region}: the container is not started with --config")
    else:
        config_dir, config_file = config_path.rsplit("/", 1)
        vol = volumes.get(mounts.get(config_dir, ""), {})
        cm_name = vol.get("configMap", {}).get("name")
        if cm_name not in configmaps:
            fail(f"{region}: {config_dir} is not a mounted ConfigMap of this overlay ({cm_name})")
        elif config_file not in configmaps[cm_name].get("data", {}):
            fail(f"{region}: ConfigMap {cm_name} has no {config_file}")
        else:
            conf = tomllib.loads(configmaps[cm_name]["data"][config_file])
    if conf is not None:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        listen = env.get("MERIDIAN_LISTEN") or conf.get("listen")
        grpc = env.get("MERIDIAN_GRPC_LISTEN") or conf.get("grpc_listen")
        if port_of(listen) not in port_numbers or port_of(grpc) not in port_numbers:
            fail(f"{region}: the config listens on {listen} / {grpc}, the container declares {ports}")
        if conf.get("region") != region:
            fail(f"{region}: the overlay's config names region {conf.get('region')!r}")
        # Other regions reach this one, and it reaches them, on the gRPC port every
        # overlay's pod declares (the regions' Services expose that same port).
        for addr in [conf.get("advertise_grpc_addr", "")] + list(conf.get("join", [])):
            if addr and port_of(addr) != ports.get("grpc"):
                fail(f"{region}: {addr} is not on the gRPC port {ports.get('grpc')}")
        data_dir = env.get("MERIDIAN_DATA_DIR") or conf.get("data_dir")
        if mounts.get(data_dir) not in claims:
            fail(f"{region}: data_dir {data_dir} is not the PersistentVolumeClaim's mount ({mounts})")
        for key in ("tls_cert_file", "tls_key_file", "grpc_tls_cert_file", "grpc_tls_key_file", "grpc_tls_ca_file"):
            if key not in conf:
                continue
            under = [p for p in mounts if conf[key].startswith(p.rstrip("/") + "/")]
            secret_vols = [volumes.get(mounts[p], {}) for p in under]
            if not any("secret" in v or "projected" in v for v in secret_vols):
                fail(f"{region}: {key} = {conf[key]} is not under a mounted Secret")
    for probe_name in ("readinessProbe", "livenessProbe"):
        probe = c.get(probe_name, {}).get("httpGet")
        if not probe:
            fail(f"{region}: no HTTP {probe_name}")
            continue
        port = probe["port"]
        if (port not in ports) if isinstance(port, str) else (port not in port_numbers):
            fail(f"{region}: {probe_name} uses port {port}, not declared by the container")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fail(f"{region}: the readiness probe does not ask /readyz")
    # Secrets the pod uses: defined here, or created by the operator as the README says.
    used = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    used |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if e.get("valueFrom", {}).get("secretKeyRef")}
    for s in sorted(used - secrets_defined):
        if s not in k8s_readme:
            fail(f"{region}: the pod uses Secret {s}, which the overlay does not define and deploy/kubernetes/README.md does not mention")
    pod_labels = sts["spec"]["template"]["metadata"].get("labels", {})
    headless = False
    for svc in kinds.get("Service", []):
        spec = svc["spec"]
        selector = spec.get("selector", {})
        if any(pod_labels.get(k) != v for k, v in selector.items()):
            fail(f"{region}: Service {svc['metadata']['name']} selects {selector}, not the StatefulSet's pods")
        for p in spec.get("ports", []):
            target = p.get("targetPort", p["port"])
            if (target not in ports) if isinstance(target, str) else (target not in port_numbers):
                fail(f"{region}: Service {svc['metadata']['name']} targets port {target}, not declared by the container")
        if spec.get("clusterIP") == "None":
            headless = True
            if sts["spec"].get("serviceName") != svc["metadata"]["name"]:
                fail(f"{region}: the StatefulSet's serviceName is not the headless Service {svc['metadata']['name']}")
    if not headless:
        fail(f"{region}: no headless Service for the gRPC peers")
    if not kinds.get("PodDisruptionBudget"):
        fail(f"{region}: no PodDisruptionBudget")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"consistent: Dockerfile, compose ({len(nodes)} regions), {len(region_files)} region files, {len(overlays)} Kubernetes overlays")
