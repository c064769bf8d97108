"""Sequence alignment of two layer lists (Needleman-Wunsch with free gaps, i.e. weighted LCS).

Pairs are allowed only between compatible layers (same signature); gaps cost nothing, so an
inserted or removed layer on one side leaves the rest aligned. A pair is *certain* only when
every optimal alignment agrees on it: it lies on some optimal path and neither of its layers
has another partner on any optimal path. Anything else is reported as ambiguous.

Example:
    >>> align(["a", "b", "c"], ["a", "x", "b", "c"])
    ([(0, 0), (1, 2), (2, 3)], {})
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def align(source: Sequence[Hashable], target: Sequence[Hashable]
          ) -> tuple[list[tuple[int, int]], dict[int, list[int]]]:
    """Certain pairs ``(i, j)`` and, for ambiguous target indices, their candidate sources.

    ``source`` and ``target`` hold compatibility keys (layer signatures): two layers may
    pair when their keys are equal; ``None`` never pairs. Each row of the dynamic program is
    one vectorised step (a running maximum), so 5,000 x 5,000 layers take well under a second.
    """
    n, m = len(source), len(target)
    if not n or not m:
        return [], {}
    codes: dict[Hashable, int] = {}
    src = np.array([codes.setdefault(k, len(codes)) if k is not None else -1 for k in source])
    tgt = np.array([codes.get(k, -2) if k is not None else -3 for k in target])
    if not np.isin(src, tgt).any():
        return [], {}
    positions: dict[int, np.ndarray] = {}
    order = np.argsort(tgt, kind="stable")
    codes_sorted = tgt[order]
    bounds = np.flatnonzero(np.diff(codes_sorted)) + 1
    for chunk in np.split(order, bounds):
        positions[int(tgt[chunk[0]])] = chunk
    empty = np.zeros(0, dtype=np.int64)
    dtype = np.int16 if max(n, m) < 32000 else np.int32
    fwd = np.zeros((n + 1, m + 1), dtype=dtype)
    for i in range(n):
        prev = fwd[i]
        cand = prev.copy()
        hit = positions.get(int(src[i]), empty)
        if hit.size:
            cand[hit + 1] = np.maximum(cand[hit + 1], prev[hit] + 1)
        fwd[i + 1] = np.maximum.accumulate(cand)
    best = int(fwd[n, m])
    on_path: list[tuple[int, int]] = []
    nxt = np.zeros(m + 1, dtype=dtype)  # bwd[i + 1]
    for i in range(n - 1, -1, -1):
        hit = positions.get(int(src[i]), empty)
        if hit.size:
            ok = fwd[i, hit].astype(np.int64) + 1 + nxt[hit + 1] == best
            on_path.extend((i, int(j)) for j in hit[ok])
        cand = nxt.copy()
        if hit.size:
            cand[hit] = np.maximum(cand[hit], nxt[hit + 1] + 1)
        nxt = np.maximum.accumulate(cand[::-1])[::-1].copy()
    partners_s: dict[int, set[int]] = {}
    partners_t: dict[int, set[int]] = {}
    for i, j in on_path:
        partners_s.setdefault(i, set()).add(j)
        partners_t.setdefault(j, set()).add(i)
    certain = sorted((i, j) for i, j in on_path
                     if partners_s[i] == {j} and partners_t[j] == {i})
    ambiguous = {j: sorted(srcs) for j, srcs in partners_t.items() if len(srcs) > 1}
    for i, tgts in partners_s.items():
        if len(tgts) > 1:
            for j in tgts:
                ambiguous.setdefault(j, sorted(partners_t[j]))
    return certain, ambiguous
