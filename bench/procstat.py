"""CPU time and memory of process trees, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from "state" on; comm may hold spaces


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def cpu_seconds(roots: list[int]) -> float:
    """utime + stime of every live process in the trees, plus what they reaped (cutime + cstime)."""
    ticks = 0
    for root in roots:
        for pid in process_tree(root):
            fields = _stat_fields(pid)
            if fields is not None:
                ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLK_TCK


def rss_bytes(roots: list[int]) -> int:
    total = 0
    for root in roots:
        for pid in process_tree(root):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def start_time(pid: int) -> int | None:
    """Clock ticks after boot when the process started: with the pid, it names one process for sure."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None
