"""External runtimes run in child processes (TFLM, CP-SAT, the ONNX converter, the Arm compiler: one runner), and the TensorFlow import guard."""
