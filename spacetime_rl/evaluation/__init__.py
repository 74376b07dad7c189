"""The evaluation job behind evaluate.py (`spacetime_rl.evaluation.job`).

Nothing is imported here, so `evaluate.py` reads its schema (`evaluation.config`) without loading
torch; the metrics it shares with training live in `spacetime_rl.metrics`.
"""
