"""Firmware generation for TFLM: model C arrays, op resolver, arena size, main.cc."""
