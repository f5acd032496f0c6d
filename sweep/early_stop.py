"""Grid early stopping: the rule that says a running point is already past its method's threshold.

Most of a grid's compute goes to learning rates far above a method's peak, whose accuracy collapses long
before their last step. `grid.early_stop` (off by default) lets the sweeper stop such a point while it
trains (sweep/early_stop_monitor.py writes the stop request; the job ends `stopped`, final for a rerun,
never scored by the report). The rule compares, at the same step s, a running point's selection-split
accuracy with the best point of its method at step s, and stops it only when all of these hold:

1. **Its lr is above the best point's lr.** The question a grid answers is where each method's threshold
   is; a point below the peak is evidence about the rise to the peak, and is never stopped.
2. **It is not the lr directly above the best, and the lr directly below it is itself clearly worse (or
   was stopped).** The peak and its neighbours decide the bracket (sweep/refine.py refines between them and
   runs more seeds there) and every claim of the report (the threshold claim compares the peak with the next
   higher lr; the β and best-method claims use the peak's configurations). Requiring the lower neighbour to
   be condemned too means a stopped point is at least two grid lrs past a peak that the data already
   separate from it, so a late change of the peak by one lr still finds its neighbours complete.
3. **It is below the best by more than `margin`, with probability at least `confidence`.** Early curves
   are noisy and cross (a high β can start slower and finish higher), so a difference must be large and
   sure. eval.jsonl carries, per evaluation, the selection accuracy and the selection split's size
   (`select_n`), not per-question answers (predictions are written only at the end), so the probability is a
   normal approximation to the binomial, not a question bootstrap: with accuracies a (the point, n questions)
   and b (the best, a mean over k seeds of n questions each),
   P(b − a > margin) ≈ Φ((b − a − margin) / √(a(1−a)/n + b(1−b)/(k·n))). Treating the two as independent
   overstates the variance of a paired difference on the same questions, so the test is conservative.

The best point of a method at step s is chosen by the one peak rule (`trainers.data.selection.peak`, as the
report and refinement choose it) over the points that reached step s, seed means per (lr, β).

    grid:
      early_stop: {enabled: true, margin: 0.1, confidence: 0.95}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sweep.grid import GridError, GridPoint
from trainers.data.selection import peak


@dataclass(frozen=True)
class EarlyStopSpec:
    margin: float
    confidence: float


@dataclass(frozen=True)
class Eval:
    """One intermediate evaluation: selection accuracy over `n` selection questions."""
    accuracy: float
    n: int


def early_stop_spec(grid: Mapping | None) -> EarlyStopSpec | None:
    """grid.early_stop parsed and checked (GridError names the field), or None when it is off."""
    spec = (grid or {}).get("early_stop")
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise GridError(f"grid.early_stop must be a mapping like {{enabled: true, margin: 0.1, confidence: 0.95}}, "
                        f"got {spec!r}")
    unknown = set(spec) - {"enabled", "margin", "confidence"}
    if unknown:
        raise GridError(f"grid.early_stop has unknown key(s) {sorted(unknown)}; use enabled, margin, confidence")
    enabled, margin, confidence = spec.get("enabled", True), spec.get("margin", 0.1), spec.get("confidence", 0.95)
    if not isinstance(enabled, bool):
        raise GridError(f"grid.early_stop.enabled={enabled!r} must be true or false")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise GridError(f"grid.early_stop.margin={margin!r} must be a number in [0, 1) (an accuracy difference, "
                        f"e.g. 0.1)")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise GridError(f"grid.early_stop.confidence={confidence!r} must be a number in (0, 1), e.g. 0.95")
    return EarlyStopSpec(float(margin), float(confidence)) if enabled else None


def p_worse_by(a: Eval, best: Eval, margin: float) -> float:
    """P(best's true accuracy − a's > margin), normal approximation (module docstring, condition 3)."""
    diff = best.accuracy - a.accuracy - margin
    se = math.sqrt(a.accuracy * (1 - a.accuracy) / max(a.n, 1) + best.accuracy * (1 - best.accuracy) / max(best.n, 1))
    if se == 0:
        return 1.0 if diff > 0 else 0.0
    return 0.5 * (1 + math.erf(diff / (se * math.sqrt(2))))


def to_stop(curves: Mapping[GridPoint, Mapping[int, Eval]], running: Iterable[GridPoint],
            stopped: Iterable[GridPoint], spec: EarlyStopSpec) -> dict[GridPoint, str]:
    """The running points to stop now, each with its reason.

    `curves`: every point of the sweep (planned ones without evaluations included: they define each
    method's lr neighbours) -> its intermediate evaluations by step. `stopped`: points already stopped.
    Each running point is judged at its latest evaluation step that the lr below it has reached too.
    """
    stopped = set(stopped)
    out: dict[GridPoint, str] = {}
    for p in running:
        if p in stopped or not curves.get(p):
            continue
        group = [q for q in curves if (q.setting, q.method) == (p.setting, p.method)]
        step = _judging_step(p, curves, group, stopped)
        if step is None:
            continue
        at = {q: curves[q][step] for q in group if step in curves[q]}
        by_lr: dict[float, dict[float | None, list[Eval]]] = {}
        for q, e in at.items():
            by_lr.setdefault(q.lr, {}).setdefault(q.beta, []).append(e)
        means = {lr: {b: _mean(es) for b, es in betas.items()} for lr, betas in by_lr.items()}
        best_lr, best_beta = peak({lr: {b: e.accuracy for b, e in betas.items()} for lr, betas in means.items()})
        best = means[best_lr][best_beta]
        if p.lr <= best_lr:  # condition 1
            continue
        lower = max(lr for lr in {q.lr for q in group} if lr < p.lr)
        if lower == best_lr:  # condition 2: the best's upper neighbour decides the bracket
            continue
        lower_stopped = all(q in stopped for q in group if q.lr == lower)
        lower_worse = lower in means and all(p_worse_by(e, best, spec.margin) >= spec.confidence
                                             for e in means[lower].values())
        if not (lower_stopped or lower_worse):  # condition 2: the lr below must be past the threshold too
            continue
        prob = p_worse_by(at[p], best, spec.margin)
        if prob >= spec.confidence:  # condition 3
            out[p] = (f"early stop: selection accuracy {at[p].accuracy:.3f} at step {step} below "
                      f"{best.accuracy:.3f} of the best point (lr={best_lr:g}, beta={best_beta}) by more than "
                      f"{spec.margin:g} with probability {prob:.3f}")
    return out


def _judging_step(p: GridPoint, curves: Mapping[GridPoint, Mapping[int, Eval]], group: list[GridPoint],
                  stopped: set[GridPoint]) -> int | None:
    """The latest step of p at which the lr below it has an evaluation too (any step when that lr was
    stopped): condition 2 needs that lr's accuracy at the same step. Jobs of one launch advance at different
    speeds, and a point often runs a little ahead of the lr below it: judged only at its latest step, it
    would never be judged. None when p is its method's lowest lr or no step of p can be judged yet."""
    lower_lrs = [q.lr for q in group if q.lr < p.lr]
    if not lower_lrs:
        return None
    lower = [q for q in group if q.lr == max(lower_lrs)]
    if all(q in stopped for q in lower):
        return max(curves[p])
    return max((s for s in curves[p] if any(s in curves[q] for q in lower)), default=None)


def _mean(evals: list[Eval]) -> Eval:
    """Seed mean: the accuracies' mean, over the questions of all seeds (k·n for its variance)."""
    return Eval(sum(e.accuracy for e in evals) / len(evals), sum(e.n for e in evals))
