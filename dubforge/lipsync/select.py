"""Unit selection: per output frame a bank unit, by shape distance plus a continuity cost (Viterbi)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dubforge.lipsync.rows import Rows, row_writer
from dubforge.lipsync.visemes import Range

HOLD, JUMP = 0.03, 0.08  # transition costs; following the source (unit k-1 -> k) is free
WEIGHTS = np.array([1.0, 0.5, 0.3])
# On a bilabial the opening term dominates everything else (continuity included): the most closed units win, so
# the lip fit only has to finish a closure, not fake one from a half-open mouth.
CLOSURE_WEIGHT = 100.0


def target_costs(desc: np.ndarray, targets: np.ndarray, closed: np.ndarray, rng: Range) -> np.ndarray:
    """(T, K) squared shape distance in units of the speaker's range; a closure must find a closed mouth."""
    span = max(rng.open - rng.closed, 1e-3)
    scale = np.array([span, max((rng.widest - rng.roundest) / 2, 1e-3), span])
    diff = (targets[:, None, :] - desc[None, :, :]) / scale
    w = np.where(closed[:, None], WEIGHTS * [CLOSURE_WEIGHT, 1.0, 1.0], WEIGHTS)
    return (diff**2 * w[:, None, :]).sum(-1)


def select(desc: np.ndarray, targets: np.ndarray, closed: np.ndarray, rng: Range,
           consecutive: np.ndarray, block: int = 256) -> np.ndarray:
    """Unit index per target frame. Costs are made a block of frames at a time (bounded memory)."""
    return viterbi(lambda a, b: target_costs(desc, targets[a:b], closed[a:b], rng), len(targets),
                   consecutive, block)


def viterbi(cost_block, t_len: int, consecutive: np.ndarray, block: int = 256) -> np.ndarray:
    """Cheapest unit path. Transitions: continue the source (free), hold (HOLD), jump anywhere (JUMP);
    O(T*K) time. cost_block(a, b) -> costs[a:b] (b-a, K). The back-pointers (per frame, a choice per unit and the
    best unit) go to a temporary row file and are read back a window at a time: an hour's single shot would hold
    40 MB of them (K = 360), and memory stays O(K * block) whatever T."""
    first = cost_block(0, min(block, t_len))
    k = first.shape[1]
    if k >= 1 << 16:
        raise ValueError(f"{k} units: back-pointers are uint16")
    acc = first[0].copy()
    costs, base = first, 0
    row = np.zeros(k + 1, np.uint16)  # [choice per unit: 0 continue, 1 hold, 2 jump; best unit of the frame before]
    with tempfile.TemporaryDirectory(prefix="dubforge-viterbi-") as tmp:
        back = Path(tmp) / "back.npy"
        with row_writer(back, (t_len, k + 1), np.uint16) as write:
            write(row)  # frame 0 has no predecessor
            for t in range(1, t_len):
                if t - base >= len(costs):
                    base, costs = t, cost_block(t, min(t + block, t_len))
                j = int(np.argmin(acc))
                cont = np.full(k, np.inf)
                cont[1:] = np.where(consecutive[1:], acc[:-1], np.inf)
                options = np.stack([cont, acc + HOLD, np.full(k, acc[j] + JUMP)])
                pick = np.argmin(options, axis=0)
                row[:k], row[k] = pick, j
                write(row)
                acc = costs[t - base] + options[pick, np.arange(k)]
        rows = Rows(back, block)
        path = np.zeros(t_len, np.int64)
        path[-1] = int(np.argmin(acc))
        for t in range(t_len - 1, 0, -1):
            pointers = rows.row(t)
            c = pointers[path[t]]
            path[t - 1] = path[t] - 1 if c == 0 else path[t] if c == 1 else pointers[k]
    return path
