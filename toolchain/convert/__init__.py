"""Model conversion: PyTorch subnets to Keras/int8 TFLite and ONNX, ONNX models to int8 TFLite."""
