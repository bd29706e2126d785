"""Pipeline parallelism for flowprof: cut a model into stages, run them as processes, and check
the predicted bits of every cut against the bytes torch.distributed actually moved.

- :mod:`distributed.partition`: which units each stage holds and what each cut carries (pure
  planning over the traced graph; no processes).
- :mod:`distributed.pipeline`: one process per stage over gloo on 127.0.0.1, send/recv of the
  cut values, byte counts gathered on rank 0, outputs compared with the single-process run.
"""

from flowprof.distributed.partition import (
    ComputeMeasure,
    Cut,
    CutValue,
    Dataflow,
    Partition,
    PartitionError,
    Stage,
    StagePlan,
    analyse,
    cut_values,
    partition,
    stage_plans,
)
from flowprof.distributed.pipeline import (
    CutCheck,
    PipelineError,
    PipelineResult,
    run_module_pipeline,
    run_partition,
    run_pipeline,
)

__all__ = [
    "ComputeMeasure",
    "Cut",
    "CutCheck",
    "CutValue",
    "Dataflow",
    "Partition",
    "PartitionError",
    "PipelineError",
    "PipelineResult",
    "Stage",
    "StagePlan",
    "analyse",
    "cut_values",
    "partition",
    "run_module_pipeline",
    "run_partition",
    "run_pipeline",
    "stage_plans",
]
