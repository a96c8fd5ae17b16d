"""The measuring tools, together: speed against baselines side by side in one run, and where
inference time goes. Run from the repository root:

    python -m benchmarks --quick             # benchmark.py: every row, small (docs/performance.md)
    python -m benchmarks                     # the full table
    python -m benchmarks.profile_model       # inference time stage by stage

benchmark.py (the rows and the command line), data.py (its frames and weights), timing.py (timed
runs, peak memory, the ratio table), precision_rows.py (precision and heatmap-decoding rows),
profile_model.py (the stage profiler). They import the project's modules; nothing there imports them.
"""
