"""The ``soci-snapshotter-grpc`` daemon: command line, wiring, signals, systemd, logs and metrics."""
