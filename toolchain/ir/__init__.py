"""The graph IR every part of the toolchain speaks: tensors, ops, execution order."""
