"""Numbers for people: sizes, durations, shares, rates and counts (reports, bench and batch tables)."""

from __future__ import annotations


def fmt_bytes(n: float | None) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'; None -> '-'."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_seconds(s: float | None) -> str:
    """Seconds for people: '12 ms', '3.40 s', '2 min 05 s'; None -> '-'."""
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1000:.1f} ms" if s < 0.1 else f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def fmt_fps(fps: float) -> str:
    """Frames per second with sensible precision: 0.987, 13.4, 1295."""
    return f"{fps:.0f}" if fps >= 100 else f"{fps:.1f}" if fps >= 10 else f"{fps:.3f}"


def fmt_count(n: float | None) -> str:
    return "-" if n is None else f"{int(n):,}"


def fmt_share(fraction: float) -> str:
    """A share for people: 0.8132 -> '81.3%', 0.00031 -> '0.03%', 0 -> '0%'."""
    pct = 100 * fraction
    if pct == 0:
        return "0%"
    if pct < 0.1:
        return f"{pct:.2f}%" if pct >= 0.01 else "<0.01%"
    return f"{pct:.1f}%"


def share_of(seconds: float, wall: float) -> str:
    """``fmt_share(seconds / wall)``, or "-" without a wall time."""
    return fmt_share(seconds / wall) if wall > 0 else "-"
