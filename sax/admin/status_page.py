"""The admin's HTML status page (``GET /``): what an operator checks first.

Rendered from the same `ModelList` and `ServerList` the JSON API returns, so the page can
never disagree with ``saxutil ls``. Models show requested vs ready replicas and, when short,
why; servers show what they hold and how long ago they last joined. Access shows whether auth
is on, the cell's admin ACL, each model's ACLs and each principal's groups; never a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape

from sax.schemas import CellConfig, ModelList, ReplicaStatus, ServerList

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.short { color: #b00; }
"""


def _cell(value: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def _statuses(replicas: Iterable[tuple[str, ReplicaStatus | None, str]]) -> str:
    """``name: STATUS (reason)`` for each (name, status, failure reason); no status: ASSIGNED."""
    return ", ".join(
        f"{name}: {status.value if status else 'ASSIGNED'}" + (f" ({reason})" if reason else "")
        for name, status, reason in replicas
    )


@dataclass(frozen=True)
class AuthView:
    """What the page shows of the cell's auth settings: no token, not even a digest."""

    enabled: bool = False
    admin_acl: str = ""
    groups: dict[str, list[str]] = field(default_factory=dict)  # principal -> groups

    @classmethod
    def of(cls, config: CellConfig | None, enabled: bool) -> AuthView:
        if config is None:
            return cls(enabled)
        groups = {name: sorted(p.groups) for name, p in sorted(config.principals.items())}
        return cls(enabled, config.admin_acl, groups)


def _access(auth: AuthView, models: ModelList) -> str:
    state = "on" if auth.enabled else "OFF (no principals in the cell config)"
    rows = [
        "<tr>"
        + _cell(m.model_id)
        + _cell(m.admin_acl or "-")
        + _cell(", ".join(f"{k}: {v}" for k, v in sorted(m.acls.items())) or "-")
        + "</tr>"
        for m in models.models
    ]
    principals = [
        "<tr>" + _cell(name) + _cell(", ".join(groups) or "-") + "</tr>"
        for name, groups in auth.groups.items()
    ]
    return f"""<h2>Access</h2>
<p>auth {escape(state)} &middot; cell admin ACL: {escape(auth.admin_acl or "(any principal)")}</p>
<table>
<tr><th>Model</th><th>Admin ACL</th><th>Method ACLs</th></tr>
{"".join(rows)}
</table>
<table>
<tr><th>Principal</th><th>Groups</th></tr>
{"".join(principals)}
</table>
"""


def render(
    cell: str,
    admin_id: str,
    models: ModelList,
    servers: ServerList,
    auth: AuthView | None = None,
) -> str:
    rows = []
    for m in models.models:
        short = m.ready_replicas < m.num_replicas
        statuses = _statuses((r.server, r.status, r.failure_reason) for r in m.replicas)
        rows.append(
            "<tr>"
            + _cell(m.model_id)
            + _cell(m.num_replicas)
            + _cell(m.ready_replicas, "short" if short else "")
            + _cell(m.model_path)
            + _cell(m.checkpoint_path)
            + _cell(statuses or "-")
            + _cell(m.reason or "-", "short" if m.reason else "")
            + "</tr>"
        )
    server_rows = []
    for s in servers.servers:
        held = _statuses((r.model_id, r.status, r.failure_reason) for r in s.models)
        server_rows.append(
            "<tr>"
            + _cell(s.address)
            + _cell(s.data_address)
            + _cell(s.chip)
            + _cell(s.topology)
            + _cell(", ".join(s.tags) or "-")
            + _cell(held or "Idle")
            + _cell(
                "; ".join(f"{b}: {why}" for b, why in sorted(s.backend_errors.items())) or "-",
                "short" if s.backend_errors else "",
            )
            + _cell(f"{s.seconds_since_last_join:.3f}")
            + "</tr>"
        )
    title = escape(f"{cell} Cell Status")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{escape(cell)}</title><style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<p>admin {escape(admin_id)} &middot; {len(models.models)} models &middot; {len(servers.servers)} servers
&middot; <a href="/docs">API</a> &middot; <a href="/metrics">metrics</a></p>
<h2>Models</h2>
<table>
<tr><th>Name</th><th>Requested</th><th>Ready</th><th>Path</th><th>Checkpoint</th><th>Replicas</th><th>Why short</th></tr>
{"".join(rows)}
</table>
<h2>Servers</h2>
<table>
<tr><th>Address</th><th>Data address</th><th>Chip</th><th>Topology</th><th>Tags</th><th>Models</th><th>Unavailable backends</th><th>Since last join (s)</th></tr>
{"".join(server_rows)}
</table>
{_access(auth or AuthView(), models)}
</body></html>
"""
