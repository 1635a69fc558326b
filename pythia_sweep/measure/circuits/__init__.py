"""Circuits: which components feed which, and which edges carry a task at each checkpoint (issue 34).

    graph.py          the model's components as a graph (senders, receivers, who feeds whom) and the hooks along it
    attribution.py    every edge's score at once by edge attribution patching (EAP; Syed et al. 2023)
    faithfulness.py   edges patched exactly: a circuit's run with every other edge corrupted, and one edge alone
    search.py         a checkpoint's circuit: the fewest top edges reaching a target faithfulness, with its interval
    over_training.py  circuits across checkpoints, and against the graphs Tigges et al. 2024 publish
"""
