"""containerd's gRPC API: generated messages (``_proto``), typed method tables (``api``), the error
table (``status``), filter expressions (``filters``), a client (``client``) and the lazy pull (``pull``)."""
