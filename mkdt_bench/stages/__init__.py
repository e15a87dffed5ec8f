"""The stages of a grid, one module each, in the order data flows through them::

    env       where a unit runs (cache, device, threads) and the data sets it reads
    teacher   the teacher (a kind of mkdt_bench.teachers) -> target representations
    distill   method sub-units (e.g. expert trajectories) and distillations -> DistilledSet
    pretrain  a fresh encoder pre-trained on a DistilledSet
    evaluate  an encoder's downstream cells -> result rows

:mod:`mkdt_bench.pipeline.planner` plans a grid from them; :mod:`mkdt_bench.pipeline.run`
hands the units to an executor.
"""
