"""Invalid desired states, one row each: the bad file, the expected code, the expected place.

Every row starts from one valid fleet (`BASE`) and replaces or adds files. The assertion is the
same for all: compiling never raises, and exactly one finding of the row's severity comes out,
with the row's code, file and line. Add a row, not a test function.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import pytest

from reconciler.core.compile.desired import SourceFile, compile_desired
from reconciler.core.findings import Severity
from tests.support import node_keys_yaml


def doc(kind: str, name: str, spec: str, labels: str = "") -> str:
    """A document whose `spec:` is line 4, so spec line k (1-based) is file line 4 + k.

    A Node gets its enrolled keys as the last member of its spec, unless the spec gives `keys`."""
    meta = f"{{name: {name}{', labels: ' + labels if labels else ''}}}"
    spec = textwrap.dedent(spec).strip("\n")
    if kind == "Node" and "keys:" not in spec:
        spec += "\n" + node_keys_yaml(name)
    body = textwrap.indent(spec, "  ")
    return f"apiVersion: plumb/v1\nkind: {kind}\nmetadata: {meta}\nspec:\n{body}\n"


BASE: dict[str, str] = {
    "plumb.yaml": doc(
        "Repository",
        "fleet",
        """
        allowedPaths: [/etc/app, /etc/systemd/system, /etc/nginx/conf.d, /opt, /etc/plumb]
        issuers:
          le: {directory: "https://acme.test/directory", email: ops@example.com}
        """,
    ),
    "nodes/app-1.yaml": doc("Node", "app-1", "address: 10.0.0.1", "{role: app}"),
    "nodes/app-2.yaml": doc("Node", "app-2", "address: 10.0.0.2", "{role: app}"),
    "nodes/edge-1.yaml": doc("Node", "edge-1", "address: 10.0.0.9", "{role: edge}"),
    "templates/web.yaml": doc(
        "Template",
        "web",
        """
        parameters:
          type: object
          required: [port]
          properties:
            port: {type: integer, minimum: 1, maximum: 65535}
            workers: {type: integer, default: 2}
        ports: [{name: http, port: "{{ params.port }}", protocol: http}]
        resources:
          - file: {path: "/etc/app/{{ service.name }}.conf", content: "port={{ params.port }}\\n"}
          - unit: {name: "{{ service.name }}.service", content: "[Service]\\nExecStart=/opt/run {{ params.port }}\\n"}
        """,
    ),
    "traits/ingress.yaml": doc(
        "Trait",
        "ingress",
        """
        appliesTo: [web]
        conflictsWith: [public]
        parameters: {type: object, required: [host], properties: {host: {type: string}}}
        placement: {selector: {role: edge}}
        resources:
          - nginx: {site: "{{ service.name }}", content: "server_name {{ params.host }};\\n"}
        """,
    ),
    "traits/public.yaml": doc(
        "Trait",
        "public",
        """
        resources:
          - file: {path: "/etc/app/{{ service.name }}.public", content: "yes\\n"}
        """,
    ),
    "traits/batch.yaml": doc(
        "Trait",
        "batch",
        """
        appliesTo: [cron]
        resources: []
        """,
    ),
    "services/api.yaml": doc(
        "Service",
        "api",
        """
        template: web
        version: "^1.0"
        params: {port: 8080}
        placement: {selector: {role: app}}
        traits:
          - {type: ingress, params: {host: api.example.com}}
        """,
    ),
    "releases/api-1.0.0.yaml": doc(
        "Release",
        "api-1-0-0",
        """
        service: api
        version: 1.0.0
        artifact: {url: "https://example.com/api.tgz", sha256: "%s"}
        """
        % ("0" * 64),
    ),
    "certificates/api.yaml": doc("Certificate", "api", "issuer: le\ndomains: [api.example.com]"),
}


def service(name: str, spec: str) -> str:
    return doc("Service", name, spec)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, str | bytes]
    code: str
    path: str
    line: int
    severity: Severity = Severity.ERROR
    remove: tuple[str, ...] = field(default=())


CASES = [
    # --- trust -----------------------------------------------------------------------------
    Case(
        "node-with-services-but-no-keys",
        {
            "nodes/app-1.yaml": "apiVersion: plumb/v1\nkind: Node\nmetadata: {name: app-1, labels: {role: app}}\n"
            "spec:\n  address: 10.0.0.1\n"
        },
        "unenrolled-node",
        "nodes/app-1.yaml",
        4,
    ),
    # --- malformed input -------------------------------------------------------------------
    Case(
        "malformed-flow",
        {"services/api.yaml": "kind: Service\nspec: [1, 2\nmetadata: x\n"},
        "yaml",
        "services/api.yaml",
        3,
    ),
    Case(
        "bad-indentation",
        {"services/x.yaml": "kind: Service\n  metadata: {name: x}\n"},
        "yaml",
        "services/x.yaml",
        2,
    ),
    Case(
        "tab-indentation",
        {"services/x.yaml": "kind: Service\nspec:\n\ttemplate: web\n"},
        "yaml",
        "services/x.yaml",
        3,
    ),
    Case(
        "duplicate-key",
        {"services/x.yaml": "kind: Service\nkind: Node\n"},
        "duplicate-key",
        "services/x.yaml",
        2,
    ),
    Case("not-a-mapping", {"services/x.yaml": "- just\n- a list\n"}, "not-a-mapping", "services/x.yaml", 1),
    Case("scalar-document", {"services/x.yaml": "hello\n"}, "not-a-mapping", "services/x.yaml", 1),
    Case(
        "bad-utf8",
        {"services/x.yaml": b"kind: Service\nmetadata: {name: \xff}\n"},
        "encoding",
        "services/x.yaml",
        2,
    ),
    Case(
        "python-tag",
        {"services/x.yaml": "kind: !!python/object/apply:os.system [ls]\n"},
        "yaml",
        "services/x.yaml",
        1,
    ),
    Case("undefined-alias", {"services/x.yaml": "kind: *nothing\n"}, "yaml", "services/x.yaml", 1),
    # --- hostile input ---------------------------------------------------------------------
    Case(
        "ten-megabytes",
        {"services/big.yaml": "kind: Service\n" + "# " + "x" * (10 * 1024 * 1024)},
        "too-large",
        "services/big.yaml",
        1,
    ),
    Case(
        "deep-nesting",
        {"services/deep.yaml": "a: " + "[" * 5000 + "]" * 5000 + "\n"},
        "too-deep",
        "services/deep.yaml",
        1,
    ),
    Case(
        "deep-block-nesting",
        {"services/deep.yaml": "".join("  " * i + f"k{i}:\n" for i in range(200))},
        "too-deep",
        "services/deep.yaml",
        65,
    ),
    Case("billion-laughs", {"services/lol.yaml": ALIAS_BOMB}, "too-many-values", "services/lol.yaml", 6),
    Case("recursive-alias", {"services/r.yaml": "a: &a [1, *a]\n"}, "recursive-alias", "services/r.yaml", 1),
    Case(
        "sandbox-mro",
        {
            "services/api.yaml": service(
                "api",
                """
        template: web
        params: {port: 8080}
        placement: {selector: {role: app}}
        """,
            ),
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file: {path: /etc/app/x, content: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
        """,
            ),
        },
        "render",
        "templates/web.yaml",
        7,
    ),
    Case(
        "sandbox-globals",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file: {path: /etc/app/x, content: "{{ cycler.__init__.__globals__.os.system('id') }}"}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        7,
    ),
    Case(
        "template-reads-file",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file: {path: /etc/app/x, content: "{% include '/etc/passwd' %}"}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        7,
    ),
    Case(
        "template-imports",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file: {path: /etc/app/x, content: "{% import 'os' as os %}"}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        7,
    ),
    Case(
        "cpu-bomb-loops",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file:
              path: /etc/app/x
              content: |
                {% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        10,
    ),
    Case(
        "memory-bomb-repeat",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file: {path: /etc/app/x, content: "{{ 'x' * 1000000000 }}"}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        7,
    ),
    Case(
        "huge-power",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file: {path: /etc/app/x, content: "{{ 10 ** 100000000 }}"}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        7,
    ),
    # --- schema ----------------------------------------------------------------------------
    Case(
        "unknown-kind",
        {"services/x.yaml": doc("Servise", "x", "template: web")},
        "unknown-kind",
        "services/x.yaml",
        2,
    ),
    Case(
        "wrong-api-version",
        {"services/x.yaml": doc("Service", "x", "template: web").replace("v1", "v9")},
        "schema",
        "services/x.yaml",
        1,
    ),
    Case(
        "bad-name",
        {"services/x.yaml": doc("Service", "Bad_Name", "template: web")},
        "schema",
        "services/x.yaml",
        3,
    ),
    Case(
        "typo-field",
        {"services/x.yaml": service("x", "template: web\nparms: {port: 1}")},
        "schema",
        "services/x.yaml",
        6,
    ),
    Case(
        "missing-template",
        {"services/x.yaml": service("x", "params: {port: 1}")},
        "schema",
        "services/x.yaml",
        4,
    ),
    Case(
        "replicas-not-integer",
        {
            "services/x.yaml": service(
                "x",
                """
        template: web
        params: {port: 9000}
        placement: {selector: {role: app}, replicas: two}
        """,
            )
        },
        "schema",
        "services/x.yaml",
        7,
    ),
    Case(
        "bad-state",
        {"services/x.yaml": service("x", "template: web\nparams: {port: 9000}\nstate: sleeping")},
        "schema",
        "services/x.yaml",
        7,
    ),
    Case(
        "bad-duration", {"plumb.yaml": BASE["plumb.yaml"] + "  heartbeat: soon\n"}, "schema", "plumb.yaml", 8
    ),
    Case(
        "bad-plumb-yaml-hides-nothing",
        {"plumb.yaml": doc("Repository", "fleet", "allowedPaths: /etc")},
        "schema",
        "plumb.yaml",
        5,
    ),
    Case(
        "node-without-address",
        {"nodes/app-3.yaml": doc("Node", "app-3", "cordoned: false")},
        "schema",
        "nodes/app-3.yaml",
        4,
    ),
    Case(
        "release-bad-sha",
        {
            "releases/api-2.yaml": doc(
                "Release",
                "api-2",
                """
        service: api
        version: 2.0.0
        artifact: {url: "https://example.com/a.tgz", sha256: nothex}
        """,
            )
        },
        "schema",
        "releases/api-2.yaml",
        7,
    ),
    Case(
        "certificate-resource-not-supported",
        {
            "templates/web.yaml": BASE["templates/web.yaml"]
            + "    - certificate: {name: api, certPath: /etc/plumb/a.pem, keyPath: /etc/plumb/a.key}\n"
        },
        "render",
        "templates/web.yaml",
        15,
    ),
    Case(
        "unknown-time-zone",
        {
            "releases/api-1.0.0.yaml": BASE["releases/api-1.0.0.yaml"]
            + "  rollout: {window: {start: '09:00', end: '17:00', timezone: Mars/Olympus}}\n"
        },
        "schema",
        "releases/api-1.0.0.yaml",
        8,
    ),
    Case(
        "resource-two-kinds",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        resources:
          - {file: {path: /etc/app/x, content: x}, nginx: {site: x, content: x}}
        """,
            )
        },
        "schema",
        "templates/web.yaml",
        6,
    ),
    # --- parameters ------------------------------------------------------------------------
    Case(
        "param-too-large",
        {"services/api.yaml": BASE["services/api.yaml"].replace("8080", "70000")},
        "params",
        "services/api.yaml",
        7,
    ),
    Case(
        "param-unknown",
        {"services/api.yaml": BASE["services/api.yaml"].replace("port: 8080", "port: 8080, wrkers: 2")},
        "params",
        "services/api.yaml",
        7,
    ),
    Case(
        "param-missing",
        {"services/api.yaml": BASE["services/api.yaml"].replace("{port: 8080}", "{}")},
        "params",
        "services/api.yaml",
        7,
    ),
    Case(
        "param-wrong-type",
        {"services/api.yaml": BASE["services/api.yaml"].replace("8080", "eighty")},
        "params",
        "services/api.yaml",
        7,
    ),
    Case(
        "trait-param-missing",
        {
            "services/api.yaml": BASE["services/api.yaml"].replace(
                "params: {host: api.example.com}", "params: {}"
            )
        },
        "params",
        "services/api.yaml",
        10,
    ),
    Case(
        "bad-parameter-schema",
        {
            "templates/web.yaml": BASE["templates/web.yaml"].replace(
                "type: integer, minimum", "type: integr, minimum"
            )
        },
        "bad-parameter-schema",
        "templates/web.yaml",
        9,
    ),
    # --- references ------------------------------------------------------------------------
    Case(
        "unknown-template",
        {"services/api.yaml": BASE["services/api.yaml"].replace("template: web", "template: wbe")},
        "unknown-template",
        "services/api.yaml",
        5,
    ),
    Case(
        "unknown-trait",
        {"services/api.yaml": BASE["services/api.yaml"].replace("type: ingress", "type: ingres")},
        "unknown-trait",
        "services/api.yaml",
        10,
    ),
    Case(
        "missing-dependency",
        {
            "services/w.yaml": service(
                "w",
                """
        template: web
        params: {port: 9001}
        placement: {nodes: [app-1]}
        dependsOn: [redis]
        """,
            )
        },
        "missing-dependency",
        "services/w.yaml",
        8,
    ),
    Case(
        "unknown-node",
        {
            "services/w.yaml": service(
                "w",
                """
        template: web
        params: {port: 9001}
        placement: {nodes: [app-1, app-9]}
        """,
            )
        },
        "unknown-node",
        "services/w.yaml",
        7,
    ),
    Case(
        "unknown-issuer",
        {"certificates/api.yaml": doc("Certificate", "api", "issuer: zerossl\ndomains: [a.example]")},
        "unknown-issuer",
        "certificates/api.yaml",
        5,
    ),
    Case(
        "release-unknown-service",
        {
            "releases/db.yaml": doc(
                "Release",
                "db-1",
                """
        service: db
        version: 1.0.0
        artifact: {url: "https://example.com/db.tgz", sha256: "%s"}
        """
                % ("1" * 64),
            )
        },
        "unknown-service",
        "releases/db.yaml",
        5,
    ),
    Case(
        "duplicate-name",
        {"services/api-copy.yaml": BASE["services/api.yaml"]},
        "duplicate-name",
        "services/api.yaml",
        3,
    ),
    Case(
        "duplicate-repository",
        {"more/plumb.yaml": BASE["plumb.yaml"]},
        "duplicate-repository",
        "plumb.yaml",
        2,
    ),
    Case(
        "duplicate-release",
        {"releases/again.yaml": BASE["releases/api-1.0.0.yaml"].replace("api-1-0-0", "api-again")},
        "duplicate-release",
        "releases/again.yaml",
        6,
    ),
    # --- traits ----------------------------------------------------------------------------
    Case(
        "trait-not-applicable",
        {"services/api.yaml": BASE["services/api.yaml"] + "    - {type: batch}\n"},
        "trait-not-applicable",
        "services/api.yaml",
        11,
    ),
    Case(
        "trait-conflict",
        {"services/api.yaml": BASE["services/api.yaml"] + "    - {type: public}\n"},
        "trait-conflict",
        "services/api.yaml",
        11,
    ),
    Case(
        "trait-twice",
        {"services/api.yaml": BASE["services/api.yaml"] + "    - {type: ingress, params: {host: b}}\n"},
        "trait-conflict",
        "services/api.yaml",
        11,
    ),
    # --- dependencies ----------------------------------------------------------------------
    Case(
        "cycle-of-two",
        {
            "services/a.yaml": service("a", "template: web\nparams: {port: 9001}\ndependsOn: [b]"),
            "services/b.yaml": service("b", "template: web\nparams: {port: 9002}\ndependsOn: [a]"),
        },
        "dependency-cycle",
        "services/a.yaml",
        7,
    ),
    Case(
        "cycle-of-one",
        {"services/a.yaml": service("a", "template: web\nparams: {port: 9001}\ndependsOn: [a]")},
        "dependency-cycle",
        "services/a.yaml",
        7,
    ),
    Case(
        "cycle-of-three",
        {
            "services/a.yaml": service("a", "template: web\nparams: {port: 9001}\ndependsOn: [api, c]"),
            "services/c.yaml": service("c", "template: web\nparams: {port: 9003}\ndependsOn: [d]"),
            "services/d.yaml": service("d", "template: web\nparams: {port: 9004}\ndependsOn: [a]"),
        },
        "dependency-cycle",
        "services/a.yaml",
        7,
    ),
    # --- versions --------------------------------------------------------------------------
    Case(
        "unsatisfied-range",
        {"services/api.yaml": BASE["services/api.yaml"].replace('"^1.0"', '"^2.0"')},
        "unsatisfied-version",
        "services/api.yaml",
        6,
    ),
    Case(
        "unsatisfied-exact",
        {"services/api.yaml": BASE["services/api.yaml"].replace('"^1.0"', "1.0.1")},
        "unsatisfied-version",
        "services/api.yaml",
        6,
    ),
    Case(
        "bad-range",
        {"services/api.yaml": BASE["services/api.yaml"].replace('"^1.0"', '">>1"')},
        "bad-version",
        "services/api.yaml",
        6,
    ),
    # --- rendered output -------------------------------------------------------------------
    Case(
        "same-path-two-services",
        {
            "templates/fixed.yaml": doc(
                "Template", "fixed", "resources:\n  - file: {path: /etc/app/shared.conf, content: x}"
            ),
            "services/f1.yaml": service("f1", "template: fixed\nplacement: {nodes: [app-1]}"),
            "services/f2.yaml": service("f2", "template: fixed\nplacement: {nodes: [app-1]}"),
        },
        "resource-conflict",
        "templates/fixed.yaml",
        6,
    ),
    Case(
        "same-port-two-services",
        {
            "services/other.yaml": service(
                "other", "template: web\nparams: {port: 8080}\nplacement: {nodes: [app-2]}"
            ),
        },
        "port-conflict",
        "services/other.yaml",
        6,
    ),
    Case(
        "path-outside-allowed",
        {"templates/web.yaml": BASE["templates/web.yaml"].replace("/etc/app/{{", "/root/{{")},
        "path-not-allowed",
        "templates/web.yaml",
        13,
    ),
    Case(
        "path-with-dotdot",
        {"templates/web.yaml": BASE["templates/web.yaml"].replace("/etc/app/{{", "/etc/app/../../root/{{")},
        "path-traversal",
        "templates/web.yaml",
        13,
    ),
    Case(
        "relative-path",
        {"templates/web.yaml": BASE["templates/web.yaml"].replace("/etc/app/{{", "etc/{{")},
        "path-not-allowed",
        "templates/web.yaml",
        13,
    ),
    Case(
        "undefined-variable",
        {
            "templates/web.yaml": BASE["templates/web.yaml"].replace(
                "port={{ params.port }}", "port={{ params.prot }}"
            )
        },
        "render",
        "templates/web.yaml",
        13,
    ),
    Case(
        "template-syntax",
        {"templates/web.yaml": BASE["templates/web.yaml"].replace("port={{ params.port }}", "port={% if %}")},
        "render",
        "templates/web.yaml",
        13,
    ),
    Case(
        "error-line-in-block",
        {
            "templates/web.yaml": doc(
                "Template",
                "web",
                """
        parameters: {type: object, properties: {port: {type: integer}}}
        resources:
          - file:
              path: /etc/app/x
              content: |
                line one
                line two {{ missing }}
        """,
            )
        },
        "render",
        "templates/web.yaml",
        11,
    ),
    Case(
        "port-not-a-number",
        {
            "templates/web.yaml": BASE["templates/web.yaml"].replace(
                'port: "{{ params.port }}"', 'port: "{{ service.name }}"'
            )
        },
        "render",
        "templates/web.yaml",
        11,
    ),
    Case(
        "unit-bad-state",
        {
            "templates/web.yaml": BASE["templates/web.yaml"].replace(
                '.service", content', '.service", state: paused, content'
            )
        },
        "schema",
        "templates/web.yaml",
        14,
    ),
    Case(
        "artifact-without-source",
        {
            "templates/web.yaml": BASE["templates/web.yaml"] + "    - artifact: {path: /opt/x}\n",
            "services/api.yaml": BASE["services/api.yaml"].replace('version: "^1.0"', ""),
        },
        "render",
        "templates/web.yaml",
        15,
        remove=("releases/api-1.0.0.yaml",),
    ),
    Case(
        "unknown-secret",
        {
            "templates/web.yaml": BASE["templates/web.yaml"].replace(
                "port={{ params.port }}", "pw={{ secret('db', 'pw') }}"
            )
        },
        "render",
        "templates/web.yaml",
        13,
    ),
    # --- warnings --------------------------------------------------------------------------
    Case(
        "selector-matches-nothing",
        {
            "services/w.yaml": service(
                "w",
                """
        template: web
        params: {port: 9001}
        placement: {selector: {role: db}}
        """,
            )
        },
        "empty-selector",
        "services/w.yaml",
        7,
        Severity.WARNING,
    ),
    Case(
        "more-replicas-than-nodes",
        {
            "services/w.yaml": service(
                "w",
                """
        template: web
        params: {port: 9001}
        placement: {selector: {role: app}, replicas: 5}
        """,
            )
        },
        "too-few-nodes",
        "services/w.yaml",
        7,
        Severity.WARNING,
    ),
]


def _files(case: Case) -> list[SourceFile]:
    merged: dict[str, str | bytes] = {**BASE, **case.files}
    return [
        SourceFile(path, text.encode() if isinstance(text, str) else text)
        for path, text in merged.items()
        if path not in case.remove
    ]


def test_base_fleet_is_valid() -> None:
    """The fleet every row starts from has no finding at all."""
    desired = compile_desired(_files(Case("base", {}, "", "", 0)))
    assert desired.findings == ()
    assert desired.ok


def test_there_are_enough_cases() -> None:
    """The issue asks for at least 40 rows."""
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_one_clear_finding(case: Case) -> None:
    """The bad input yields exactly one finding of its severity, with the row's code and place."""
    desired = compile_desired(_files(case))
    relevant = [f for f in desired.findings if f.severity is case.severity]
    assert len(relevant) == 1, "\n".join(map(str, desired.findings))
    finding = relevant[0]
    assert (finding.code, finding.path, finding.line) == (case.code, case.path, case.line), str(finding)
    assert finding.message and "Traceback" not in finding.message
    assert str(finding).startswith(f"{case.path}:{case.line}:")
    if case.severity is Severity.WARNING:
        assert desired.ok
    else:
        assert not desired.ok
