"""The threshold's resamples redo the choice of β in every resample (analysis/estimate.py::lr_curve): a β that
loses on the observed data but wins in a resample carries that resample's curve."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.estimate import lr_curve


def _point(pid: int, lr: float, beta: float, accuracy: float) -> dict:
    return {"pid": pid, "lr": lr, "beta": beta, "accuracy": accuracy, "report_accuracy": accuracy, "n_scored": 2,
            "n_ok": 2, "n_diverged": 0, "n_failed": 0, "n_stopped": 0, "n_runs": 2, "runs": [], "m_theta": 0.0,
            "stop_step": np.nan, "stop_accuracy": np.nan}


def test_each_resample_takes_the_best_beta_of_that_resample_not_the_observed_one():
    points = pd.DataFrame([_point(0, 1e-3, 0.1, 0.61), _point(1, 1e-3, 0.5, 0.60), _point(2, 3e-3, 0.1, 0.40)])
    select_b = np.array([[0.50, 0.70, 0.60, 0.62],   # β 0.1 at 1e-3: observed best
                         [0.60, 0.40, 0.65, 0.62],   # β 0.5 at 1e-3: wins resamples 0 and 2
                         [0.30, 0.45, 0.41, 0.39]])  # 3e-3
    curve, s_lr = lr_curve(points, select_b)
    assert curve["beta"].tolist() == [0.1, 0.1] and curve["pid"].tolist() == [0, 2]
    # by hand: the larger of the two β rows in each resample, then 3e-3's own row
    assert s_lr.tolist() == [[0.60, 0.70, 0.65, 0.62], [0.30, 0.45, 0.41, 0.39]]
