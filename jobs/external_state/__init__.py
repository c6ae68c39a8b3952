"""The external-state job: validates requests and augments them with per-entity features."""
