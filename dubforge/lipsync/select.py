"""Unit selection: per output frame a bank unit, by shape distance plus a continuity cost (Viterbi)."""

from __future__ import annotations

import numpy as np

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
    O(T*K) time and one byte per (frame, unit) of back-pointers. cost_block(a, b) -> costs[a:b] (b-a, K)."""
    first = cost_block(0, min(block, t_len))
    k = first.shape[1]
    acc = first[0].copy()
    costs, base = first, 0
    choice = np.zeros((t_len, k), np.uint8)  # 0 continue, 1 hold, 2 jump
    best_prev = np.zeros(t_len, np.int64)
    for t in range(1, t_len):
        if t - base >= len(costs):
            base, costs = t, cost_block(t, min(t + block, t_len))
        j = int(np.argmin(acc))
        best_prev[t] = j
        cont = np.full(k, np.inf)
        cont[1:] = np.where(consecutive[1:], acc[:-1], np.inf)
        options = np.stack([cont, acc + HOLD, np.full(k, acc[j] + JUMP)])
        pick = np.argmin(options, axis=0)
        choice[t] = pick
        acc = costs[t - base] + options[pick, np.arange(k)]
    path = np.zeros(t_len, np.int64)
    path[-1] = int(np.argmin(acc))
    for t in range(t_len - 1, 0, -1):
        c = choice[t, path[t]]
        path[t - 1] = path[t] - 1 if c == 0 else path[t] if c == 1 else best_prev[t]
    return path
