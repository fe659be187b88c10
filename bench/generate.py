"""Write a large, valid, realistic desired-state repository for benchmarks (deterministic per seed).

    python -m bench.generate OUT --nodes 1000 --services 2000 [--seed 0]

The fleet is data only: node addresses are 10.x.y.z and never contacted. Every service gets its
own port (10000 + its index), so no two services collide on a node, dependencies only point at
lower-numbered services, so the graph is acyclic, and every path stays inside `ALLOWED_PATHS`.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from contract.crypto import SealingKey, SigningKey

ALLOWED_PATHS = ["/etc/plumb", "/etc/nginx/conf.d", "/etc/systemd/system", "/opt", "/srv", "/var/lib/plumb"]
# Seven nodes in ten run applications, two databases, one is an edge; even three nodes get every role.
ROLES = ["app", "db", "edge", "app", "app", "app", "db", "app", "app", "app"]
ZONES = ["a", "b", "c"]
FIRST_PORT = 10000
WORDS = [
    "api", "auth", "billing", "cart", "catalog", "checkout", "inventory", "media",
    "notify", "orders", "pricing", "reports", "reviews", "search", "users",
]  # fmt: skip

UNIT_TAIL = "Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n"

TEMPLATES: dict[str, dict[str, Any]] = {
    "python-web": {
        "description": "A Python web application run by systemd",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "workers": {"type": "integer", "minimum": 1, "default": 2},
                "module": {"type": "string", "default": "app"},
            },
        },
        "ports": [{"name": "http", "port": "{{ params.port }}", "protocol": "http"}],
        "health": {
            "readiness": {"http": {"port": "http", "path": "/healthz"}, "period": "5s", "timeout": "2s"}
        },
        "resources": [
            {
                "file": {
                    "path": "/etc/plumb/{{ service.name }}/config.yaml",
                    "mode": "0640",
                    "content": "listen: {{ node.address }}:{{ params.port }}\n"
                    "workers: {{ params.workers }}\n",
                }
            },
            {
                "unit": {
                    "name": "{{ service.name }}.service",
                    "restartOn": ["/etc/plumb/{{ service.name }}/config.yaml"],
                    "content": "[Unit]\nDescription={{ service.name }}\n\n[Service]\n"
                    "ExecStart=/usr/bin/python3 -m {{ params.module }}"
                    " --config /etc/plumb/{{ service.name }}/config.yaml\n" + UNIT_TAIL,
                }
            },
        ],
    },
    "go-api": {
        "description": "A compiled HTTP API installed from its Release's artifact",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "logLevel": {"type": "string", "enum": ["debug", "info", "warn"], "default": "info"},
            },
        },
        "ports": [{"name": "http", "port": "{{ params.port }}", "protocol": "http"}],
        "health": {
            "startup": {"tcp": {"port": "http"}, "period": "2s", "failureThreshold": 30},
            "readiness": {"http": {"port": "http", "path": "/ready"}, "period": "5s"},
        },
        "resources": [
            {"artifact": {"path": "/opt/{{ service.name }}"}},
            {
                "file": {
                    "path": "/etc/plumb/{{ service.name }}/env",
                    "mode": "0640",
                    "content": "PORT={{ params.port }}\nLOG_LEVEL={{ params.logLevel }}\n",
                }
            },
            {
                "unit": {
                    "name": "{{ service.name }}.service",
                    "restartOn": ["/etc/plumb/{{ service.name }}/env"],
                    "content": "[Service]\nEnvironmentFile=/etc/plumb/{{ service.name }}/env\n"
                    "ExecStart=/opt/{{ service.name }}/current/bin/{{ service.name }}\n" + UNIT_TAIL,
                }
            },
        ],
    },
    "static-site": {
        "description": "Static files served by Python's built-in web server",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "title": {"type": "string", "default": "Welcome"},
            },
        },
        "ports": [{"name": "http", "port": "{{ params.port }}", "protocol": "http"}],
        "health": {"readiness": {"http": {"port": "http", "path": "/"}, "period": "10s"}},
        "resources": [
            {"directory": {"path": "/srv/{{ service.name }}", "mode": "0755"}},
            {
                "file": {
                    "path": "/srv/{{ service.name }}/index.html",
                    "mode": "0644",
                    "content": "<!doctype html>\n<title>{{ params.title }}</title>\n"
                    "<p>{{ service.name }} on {{ node.name }}</p>\n",
                }
            },
            {
                "unit": {
                    "name": "{{ service.name }}.service",
                    "content": "[Service]\nWorkingDirectory=/srv/{{ service.name }}\n"
                    "ExecStart=/usr/bin/python3 -m http.server {{ params.port }} --bind {{ node.address }}\n"
                    + UNIT_TAIL,
                }
            },
        ],
    },
    "queue-worker": {
        "description": "A background worker exposing metrics on its port",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["port", "queue"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "queue": {"type": "string"},
                "concurrency": {"type": "integer", "minimum": 1, "default": 4},
            },
        },
        "ports": [{"name": "metrics", "port": "{{ params.port }}", "protocol": "http"}],
        "health": {"liveness": {"process": {}, "period": "10s"}},
        "resources": [
            {
                "file": {
                    "path": "/etc/plumb/{{ service.name }}/worker.conf",
                    "content": "queue = {{ params.queue }}\nconcurrency = {{ params.concurrency }}\n"
                    "metrics = {{ node.address }}:{{ params.port }}\n",
                }
            },
            {
                "unit": {
                    "name": "{{ service.name }}.service",
                    "restartOn": ["/etc/plumb/{{ service.name }}/worker.conf"],
                    "content": "[Service]\n"
                    "ExecStart=/usr/bin/python3 -m worker"
                    " --config /etc/plumb/{{ service.name }}/worker.conf\n" + UNIT_TAIL,
                }
            },
        ],
    },
    "kv-store": {
        "description": "A Redis instance with its data under /var/lib/plumb",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "maxmemory": {"type": "string", "default": "64mb"},
            },
        },
        "ports": [{"name": "redis", "port": "{{ params.port }}", "protocol": "tcp"}],
        "health": {"readiness": {"tcp": {"port": "redis"}, "period": "5s", "timeout": "1s"}},
        "resources": [
            {"directory": {"path": "/var/lib/plumb/{{ service.name }}", "mode": "0750"}},
            {
                "file": {
                    "path": "/etc/plumb/{{ service.name }}/redis.conf",
                    "content": "bind {{ node.address }}\nport {{ params.port }}\n"
                    "dir /var/lib/plumb/{{ service.name }}\nmaxmemory {{ params.maxmemory }}\n",
                }
            },
            {
                "unit": {
                    "name": "{{ service.name }}.service",
                    "restartOn": ["/etc/plumb/{{ service.name }}/redis.conf"],
                    "content": "[Service]\n"
                    "ExecStart=/usr/bin/redis-server /etc/plumb/{{ service.name }}/redis.conf\n" + UNIT_TAIL,
                }
            },
        ],
    },
}

# Share of services per template (kv-store goes to db nodes, the rest to app nodes).
TEMPLATE_WEIGHTS = {"python-web": 40, "static-site": 15, "queue-worker": 25, "kv-store": 20}

TRAITS: dict[str, dict[str, Any]] = {
    "ingress": {
        "description": "An nginx site on the edge nodes proxying to the service's healthy http endpoints",
        "appliesTo": ["python-web", "go-api", "static-site"],
        "parameters": {
            "type": "object",
            "required": ["host"],
            "properties": {"host": {"type": "string"}, "path": {"type": "string", "default": "/"}},
        },
        "placement": {"selector": {"role": "edge"}},
        "resources": [
            {
                "nginx": {
                    "site": "{{ service.name }}",
                    "content": "upstream {{ service.name }} {\n"
                    '{% for e in endpoints(service.name, "http") %}  server {{ e.address }}:{{ e.port }};\n'
                    "{% else %}  server 127.0.0.1:1 down;\n{% endfor %}}\n"
                    "server { listen 80; server_name {{ params.host }}; "
                    "location {{ params.path }} { proxy_pass http://{{ service.name }}; } }\n",
                }
            }
        ],
    },
    "limits": {
        "description": "Resource limits for the service's unit, as a systemd drop-in",
        "appliesTo": ["*"],
        "parameters": {
            "type": "object",
            "properties": {
                "memory": {"type": "string", "default": "512M"},
                "cpu": {"type": "string", "default": "100%"},
            },
        },
        "resources": [
            {
                "unit": {
                    "name": "{{ service.name }}.service",
                    "dropIn": "limits.conf",
                    "content": "[Service]\nMemoryMax={{ params.memory }}\nCPUQuota={{ params.cpu }}\n",
                }
            }
        ],
    },
}


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as `|` blocks so generated files read like hand-written ones."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def document(
    kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "plumb/v1", "kind": kind, "metadata": metadata, "spec": spec}


def write(root: Path, relative: str, body: dict[str, Any]) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=120))


def node_address(index: int) -> str:
    """A distinct 10.x.y.z address per index, never .0 or .255."""
    block, host = divmod(index, 254)
    return f"10.{block // 256 % 256}.{block % 256}.{host + 1}"


def node_signing_key(name: str) -> SigningKey:
    """The key node `name` enrolled with: derived from its name, so the bench can sign its reports."""
    return SigningKey(Ed25519PrivateKey.from_private_bytes(_seed("signing", name)))


def node_keys(name: str) -> dict[str, str]:
    """`spec.keys` of a generated node, as `plumb-agent enroll` prints them."""
    sealing = X25519PrivateKey.from_private_bytes(_seed("sealing", name))
    return {"signing": node_signing_key(name).public_b64(), "sealing": SealingKey(sealing).public_b64()}


def _seed(what: str, name: str) -> bytes:
    return hashlib.sha256(f"plumb bench {what} key of {name}".encode()).digest()


def make_nodes(count: int, rng: random.Random) -> list[dict[str, Any]]:
    width = max(4, len(str(count)))
    nodes = []
    for index in range(count):
        labels = {"role": ROLES[index % len(ROLES)], "zone": ZONES[rng.randrange(len(ZONES))]}
        name = f"node-{index:0{width}d}"
        spec: dict[str, Any] = {"address": node_address(index), "keys": node_keys(name)}
        if rng.random() < 0.01:
            spec["cordoned"] = True
        nodes.append(document("Node", name, spec, labels))
    return nodes


def placement(role: str, nodes: list[dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """A selector (maybe narrowed to a zone) with replicas, or an explicit list of 1-3 nodes."""
    candidates = [n for n in nodes if n["metadata"]["labels"]["role"] == role]
    if not candidates or rng.random() < 0.2:
        candidates = candidates or nodes
        chosen = rng.sample(candidates, min(len(candidates), rng.randint(1, 3)))
        return {"nodes": sorted(n["metadata"]["name"] for n in chosen)}
    selector = {"role": role}
    zone = rng.choice(ZONES)
    in_zone = [n for n in candidates if n["metadata"]["labels"]["zone"] == zone]
    if rng.random() < 0.3 and in_zone:
        selector["zone"], candidates = zone, in_zone
    return {"selector": selector, "replicas": min(len(candidates), rng.randint(1, 3))}


def make_services(count: int, nodes: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    if FIRST_PORT + count > 65536:
        raise ValueError(f"at most {65536 - FIRST_PORT} services: each one gets its own port")
    width = max(4, len(str(count)))
    # A few services ship artifacts, so they need Releases; spread them evenly.
    artifact_every = 50
    services = []
    for index in range(count):
        template = (
            "go-api"
            if index % artifact_every == artifact_every - 1
            else rng.choices(list(TEMPLATE_WEIGHTS), weights=list(TEMPLATE_WEIGHTS.values()))[0]
        )
        name = f"{rng.choice(WORDS)}-{index:0{width}d}"
        params: dict[str, Any] = {"port": FIRST_PORT + index}
        if template == "queue-worker":
            params["queue"] = name
        role = "db" if template == "kv-store" else "app"
        spec: dict[str, Any] = {"template": template}
        if template == "go-api":
            spec["version"] = "^1.0"
        spec |= {"params": params, "placement": placement(role, nodes, rng)}
        if index and rng.random() < 0.25:
            earlier = range(max(0, index - 50), index)
            spec["dependsOn"] = sorted(
                services[i]["metadata"]["name"]
                for i in rng.sample(earlier, min(len(earlier), rng.randint(1, 2)))
            )
        traits = []
        if template in TRAITS["ingress"]["appliesTo"] and rng.random() < 0.2:
            traits.append({"type": "ingress", "params": {"host": f"{name}.example.com"}})
        if rng.random() < 0.3:
            traits.append({"type": "limits", "params": {"memory": rng.choice(["256M", "512M", "1G"])}})
        if traits:
            spec["traits"] = traits
        if rng.random() < 0.02:
            spec["state"] = "stopped"
        labels = {
            "team": rng.choice(["core", "growth", "platform", "data"]),
            "tier": rng.choice(["web", "batch"]),
        }
        services.append(document("Service", name, spec, labels))
    return services


def make_releases(services: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    releases = []
    for service in services:
        if service["spec"]["template"] != "go-api":
            continue
        name = service["metadata"]["name"]
        for minor in range(rng.randint(1, 2)):
            version = f"1.{minor}.{rng.randint(0, 9)}"
            url = f"https://artifacts.example.com/{name}/{name}-{version}.tar.gz"
            spec = {
                "service": name,
                "version": version,
                "artifact": {
                    "url": url,
                    "sha256": hashlib.sha256(url.encode()).hexdigest(),
                    "unpack": "tar.gz",
                },
                "rollout": {
                    "batches": [1, "25%", "100%"],
                    "healthyFor": "30s",
                    "timeout": "10m",
                    "onFailure": rng.choice(["rollback", "pause"]),
                },
            }
            releases.append(document("Release", f"{name}-{version}", spec))
    return releases


def generate(root: Path, *, nodes: int = 1000, services: int = 2000, seed: int = 0) -> None:
    """Write a desired-state repository of `nodes` nodes and `services` services under `root`."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    rng = random.Random(seed)
    repository = {
        "allowedPaths": ALLOWED_PATHS,
        "heartbeat": "30s",
        "offlineAfter": "120s",
        "planExpiry": "7d",
    }
    write(root, "plumb.yaml", document("Repository", "bench", repository))
    node_docs = make_nodes(nodes, rng)
    service_docs = make_services(services, node_docs, rng)
    for folder, docs in [
        ("nodes", node_docs),
        ("templates", [document("Template", name, spec) for name, spec in TEMPLATES.items()]),
        ("traits", [document("Trait", name, spec) for name, spec in TRAITS.items()]),
        ("services", service_docs),
        ("releases", make_releases(service_docs, rng)),
    ]:
        for body in docs:
            write(root, f"{folder}/{body['metadata']['name']}.yaml", body)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to create (must be empty or absent)")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.out, nodes=args.nodes, services=args.services, seed=args.seed)
    print(f"wrote {args.nodes} nodes and {args.services} services to {args.out}")


if __name__ == "__main__":
    main()
