"""The container backend (Docker and Podman)."""
