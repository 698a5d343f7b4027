"""Evaluation: methods x a benchmark -> metric scores, tables and a visual report (`ccedit eval CONFIG`).

`config.py` is the schema, `benchmark.py` reads BalanceCC JSON and LOVEU-style CSV, `runner.py` runs and resumes
the (item, method) pairs over one or more processes, `results.py` keeps the rows, `summary.py` and `report.py`
write the tables and the page.
"""

from .config import EvalConfig, load_eval_config
from .runner import EvalRun, run_evaluation

__all__ = ["EvalConfig", "EvalRun", "load_eval_config", "run_evaluation"]
