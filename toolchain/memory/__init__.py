"""The memory model: liveness and TFLM's greedy arena planner, the persistent tail, kernel scratch, offline plans and the chain memo the cost model prices subnets with."""
