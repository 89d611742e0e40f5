"""A stress account on a private cluster as Markdown: promise, timeline, counts, verdict.

The JSON account is the record; this is its readable face (``mqcontract stress
--markdown PATH``). The promise comes first because it was written before the run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_cluster_account"]

_COUNTS = (
    "sent",
    "acked",
    "processed",
    "lost",
    "unfinished",
    "duplicated",
    "acked_twice",
    "redelivered_after_ack",
    "reprocessed",
    "failed_acks",
    "indeterminate",
    "recovered",
    "unexpected",
    "max_redelivery",
    "deliveries",
    "injected_failures",
    "overran_claims",
    "load_seconds",
    "acked_per_second",
)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _namespaces(value: object) -> str:
    if isinstance(value, list) and value:
        return ", ".join(f"`{v}`" for v in value)
    return "yes" if value is True else "none"


def _clients(connect_to: object) -> str:
    """Where the clients connect (``clients_connect_to``: a node index, or ``all``)."""
    if connect_to == "all":
        return "Clients are given every node's URL and fail over when theirs is faulted."
    return f"Clients connect to node {connect_to} only."


def _timeline(events: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| # | fault | node | leader before | moved off node 0 | started (s) | ended (s) "
        "| new leader | failover (s) | restart (s) | whole again after (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, e in enumerate(events, 1):
        moved = "yes" if e.get("moved_leader_off_clients_node") else "no"
        lines.append(
            f"| {n} | {e.get('fault')} | {e.get('node')} `{e.get('node_name')}` "
            f"| {_cell(e.get('leader_before'))} | {moved} | {_cell(e.get('started_at'))} "
            f"| {_cell(e.get('ended_at'))} | {_cell(e.get('new_leader'))} "
            f"| {_cell(e.get('failover_seconds'))} | {_cell(e.get('restart_seconds'))} "
            f"| {_cell(e.get('whole_seconds'))} |"
        )
    errors = [f"- event {n}: {e['error']}" for n, e in enumerate(events, 1) if "error" in e]
    errors += [
        f"- event {n}: {e['failover_error']}"
        for n, e in enumerate(events, 1)
        if "failover_error" in e
    ]
    return lines + (["", *errors] if errors else [])


def render_cluster_account(data: dict[str, Any]) -> str:
    """The account ``data`` (``Account.to_dict()`` of a cluster run) as Markdown."""
    promise = data.get("promise", {})
    faults = data.get("faults", {})
    cluster = data.get("cluster", {})
    settings = data.get("settings", {})
    held = promise.get("held")
    title = f"{data.get('provider')} on a private {cluster.get('size')}-node cluster"
    lines = [
        f"# Stress: {title}, fault `{faults.get('kind')}`",
        "",
        f"**Promise {'held' if held else 'BROKEN'}**; account "
        f"{'clean' if data.get('ok') else 'NOT clean'} (nothing lost, nothing confirmed "
        "twice, nothing foreign).",
        "",
        "## What the provider promises under this fault (stated before the run)",
        "",
        promise.get("text", "").strip(),
        "",
        "Not covered (allowed and reported): " + "; ".join(promise.get("allowed", [])) + ".",
        "",
        "| bound | allowed | actual | held |",
        "|---|---|---|---|",
    ]
    for name, check in promise.get("checks", {}).items():
        mark = "yes" if check.get("held") else "**no**"
        lines.append(f"| {name} | {check.get('allowed')} | {check.get('actual')} | {mark} |")
    lines += [
        "",
        "## Fault timeline (seconds since the load began)",
        "",
        f"{faults.get('injected')} faults injected, {faults.get('completed')} completed; "
        f"each lasted {faults.get('duration_seconds')} s, "
        f"{faults.get('interval_seconds')} s after the cluster was whole again.",
        "",
        *_timeline(faults.get("timeline", [])),
        "",
        "## Account",
        "",
        "| count | value |",
        "|---|---|",
        *(f"| {key} | {_cell(data.get(key))} |" for key in _COUNTS),
        "",
        "## Cluster",
        "",
        "| node | name | address |",
        "|---|---|---|",
        *(f"| {n['index']} | `{n['name']}` | {n['address']} |" for n in cluster.get("nodes", [])),
        "",
        f"Server: {cluster.get('server') or 'not recorded'}. "
        f"{_clients(cluster.get('clients_connect_to'))} "
        f"Network namespaces: {_namespaces(cluster.get('network_namespaces'))}. "
        f"Measured timings (s): {cluster.get('timings')}.",
        "",
        f"Settings: {settings.get('messages')} messages, {settings.get('producers')} "
        f"producers, {settings.get('consumers')} consumers x {settings.get('workers')} "
        f"workers, fail rate {settings.get('fail_rate')}, slow rate "
        f"{settings.get('slow_rate')}, visibility timeout {settings.get('vt')} s, "
        f"consumers in {settings.get('mode', 'Hybrid')} mode, seed {settings.get('seed')}.",
        "",
    ]
    return "\n".join(lines)
