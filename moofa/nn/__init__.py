"""PyTorch modules: the elastic supernet, extracted subnets, the memory logger."""
