"""The one Kubernetes layer: the client as kubectl builds it, JSON objects read and
written with merge patches and conflict retries, list+watch with resume, and the
API's failures in the one error tree.

`objects` and `errors` import no client; `client`, `cluster` and `watch` do.
Every Kubernetes request goes through here: the routers, the ModelRollout source,
its status and Events, the Job gates (Jobs, ConfigMaps, Secrets) and `canaryctl apply`.
"""
