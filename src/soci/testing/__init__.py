"""Public test kit: real components for tests of this project and of code built on it.

``registry_server``: Debian's docker-registry on loopback (plain, TLS, htpasswd, token auth, pull-through).
Nothing here is imported by the runtime packages.
"""
