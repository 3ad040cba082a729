"""The analytic cost model of a subnet: int8 lowering to the graph IR, flash, params/MACs, the fast Pricer."""
