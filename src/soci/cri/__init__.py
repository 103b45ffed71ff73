"""CRI image service proxy (``[cri_keychain]``): forwards CRI image calls to containerd and keeps the pull
credentials they carry, per image, for the snapshotter's registry requests."""
