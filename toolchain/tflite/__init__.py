"""Reading `.tflite` flatbuffers into the graph IR (and the metadata moofa writes into them)."""
