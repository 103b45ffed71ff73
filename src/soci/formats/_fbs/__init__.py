"""Generated FlatBuffers code (flatc --python); regenerate with scripts/gen-flatbuffers.sh."""
