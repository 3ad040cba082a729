"""moofa: memory-optimized once-for-all networks for microcontrollers."""
