"""Counting executions: how often each request ran, across every replica.

Replicas started with ``--executions-file`` (``demo.replica``; ``Pods`` with
``count_executions``) append one line per executed SayHello;
:func:`count_executions` reads those files to count duplicate executions of a
non-idempotent call across replicas. The load itself comes from
:class:`demo.load.Load`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Executions:
    """What the replicas' execution files say."""

    per_replica: dict[str, int]
    total: int
    duplicates: dict[str, int]  # request id -> times executed (> 1)

    @property
    def duplicate_count(self) -> int:
        """Extra executions: a call that ran 3 times counts 2."""
        return sum(n - 1 for n in self.duplicates.values())


def count_executions(files: dict[str, Path], method: str = "SayHello") -> Executions:
    """Count executions of ``method`` per request id across every replica's file."""
    counts: collections.Counter[str] = collections.Counter()
    per_replica: dict[str, int] = {}
    for replica, path in files.items():
        n = 0
        if path.exists():
            for line in path.read_text().splitlines():
                name, _, request_id = line.partition(" ")
                if name == method:
                    counts[request_id] += 1
                    n += 1
        per_replica[replica] = n
    duplicates = {rid: n for rid, n in counts.items() if n > 1}
    return Executions(per_replica, sum(counts.values()), duplicates)


def execution_counts(files: dict[str, Path], method: str = "SayHello") -> collections.Counter[str]:
    """How often each request id of ``method`` ran, across every replica's file."""
    counts: collections.Counter[str] = collections.Counter()
    for path in files.values():
        if path.exists():
            for line in path.read_text().splitlines():
                name, _, request_id = line.partition(" ")
                if name == method:
                    counts[request_id] += 1
    return counts
