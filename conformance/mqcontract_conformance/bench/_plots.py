"""SVG plots of the scaling result: one figure per measurement, a line per provider.

matplotlib is an optional extra (``plots``); it is imported only here and only when
plots are asked for, with the Agg backend (no display) and a fixed SVG hash salt and no
date, so the same figures give the same files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._scaling_report import OPERATIONS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PlotsUnavailable", "figure", "write_plots"]


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed (``pip install 'mqcontract[plots]'``)."""


def _figure(width: float = 9.5, height: float = 4.8, columns: int = 1) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _colour(index: int) -> str:
    return f"C{index % 10}"


def _finish(ax: Axes, *, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        # Outside the axes, so no line is hidden under it.
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _counts_axis(ax: Axes, ticks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks), [str(t) for t in ticks])
    ax.minorticks_off()


def _workers(report: Mapping[str, Any], figure: Figure, axes: Any) -> None:
    ax: Axes = axes[0]
    ticks = report["settings"]["workers"]
    styles = ("o-", "s--", "^:", "d-.")
    for i, (name, result) in enumerate(report["providers"].items()):
        for j, series in enumerate(result["workers"]):
            points = [(p["workers"], p["median_msg_s"]) for p in series["points"]]
            points = [(x, y) for x, y in points if y is not None]
            if not points:
                continue
            ms = series["handler_ms"]
            label = f"{name}, handler awaits {ms:g} ms" if ms > 0 else f"{name}, handler idle"
            ax.plot(*zip(*points, strict=True), styles[j % 4], color=_colour(i), label=label)
    _counts_axis(ax, ticks)
    ax.set_yscale("log")
    _finish(
        ax,
        title="Event-system throughput by workers (one process, drain a backlog)",
        xlabel="QueueConsumer workers",
        ylabel="throughput (messages/s, log scale)",
    )


def _processes(report: Mapping[str, Any], figure: Figure, axes: Any) -> None:
    ax: Axes = axes[0]
    ticks = report["settings"]["processes"]
    skipped = []
    for i, (name, result) in enumerate(report["providers"].items()):
        if not result["processes"]["applicable"]:
            skipped.append(name)
            continue
        points = [(p["processes"], p["median_msg_s"]) for p in result["processes"]["points"]]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), "o-", color=_colour(i), label=name)
    _counts_axis(ax, ticks)
    workers = report["settings"]["consumer_workers"]
    title = f"Event-system throughput by consumer processes ({workers} workers each)"
    if skipped:
        title += f"\nnot applicable: {', '.join(skipped)} (queues live inside one process)"
    _finish(ax, title=title, xlabel="consumer processes", ylabel="throughput (messages/s)")
    ax.set_ylim(bottom=0)


def _latency(report: Mapping[str, Any], figure: Figure, axes: Any) -> None:
    ax: Axes = axes[0]
    for i, (name, result) in enumerate(report["providers"].items()):
        points = [p for p in result["latency"]["points"] if p.get("p50_ms") is not None]
        if not points:
            continue
        loads = [p["load"] * 100 for p in points]
        ax.plot(loads, [p["p50_ms"] for p in points], "o-", color=_colour(i), label=f"{name} p50")
        ax.plot(loads, [p["p99_ms"] for p in points], "s--", color=_colour(i), label=f"{name} p99")
    ax.set_yscale("log")
    ax.set_xlim(0, 100)
    _finish(
        ax,
        title="Push latency, send → handler, by offered load",
        xlabel="offered load (% of the provider's measured capacity)",
        ylabel="latency (ms, log scale)",
    )


def _batch(report: Mapping[str, Any], figure: Figure, axes: Any) -> None:
    batches = report["settings"]["batches"]
    operations = OPERATIONS
    for k, (ax, (operation, label)) in enumerate(zip(axes, operations, strict=True)):
        for i, (name, result) in enumerate(report["providers"].items()):
            rows = [r for r in result["batch_cost"] if r["operation"] == operation]
            cpu = [(r["batch"], r["median_cpu_us_per_msg"]) for r in rows]
            wall = [(r["batch"], r["median_wall_us_per_msg"]) for r in rows]
            for points, style, what in ((cpu, "o-", "CPU"), (wall, "s:", "wall")):
                done = [(x, y) for x, y in points if y is not None and y > 0]
                if done:
                    ax.plot(
                        *zip(*done, strict=True), style, color=_colour(i), label=f"{name} {what}"
                    )
        ax.set_xscale("log")
        ax.set_xticks(list(batches), [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_yscale("log")
        _finish(
            ax,
            title=f"{label}: cost per message by batch size",
            xlabel="messages per call (batch size)",
            ylabel="µs per message (log scale)",
            legend=k == len(operations) - 1,  # the panels share their lines: one legend
        )


_PLOTS = {
    "workers": _workers,
    "processes": _processes,
    "latency": _latency,
    "batch": _batch,
}


def figure(report: Mapping[str, Any], key: str) -> Figure:
    """The figure of one measurement (``workers``, ``processes``, ``latency``, ``batch``)."""
    batch = key == "batch"
    drawn, axes = _figure(width=17.0 if batch else 9.5, columns=3 if batch else 1)
    _PLOTS[key](report, drawn, axes)
    return drawn


def write_plots(
    report: Mapping[str, Any], directory: Path, *, prefix: str = "scaling"
) -> dict[str, str]:
    """Write ``<prefix>_<measurement>.svg`` files; return measurement → file name."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotsUnavailable("plots need matplotlib: pip install 'mqcontract[plots]'") from exc
    matplotlib.use("Agg")
    written: dict[str, str] = {}
    with matplotlib.rc_context({"svg.hashsalt": "mqcontract", "svg.fonttype": "none"}):
        for key in _PLOTS:
            name = f"{prefix}_{key}.svg"
            figure(report, key).savefig(directory / name, format="svg", metadata={"Date": None})
            written[key] = name
    return written
