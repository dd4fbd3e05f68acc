"""The one Kubernetes layer: the client as kubectl builds it, JSON objects read and
written with merge patches and conflict retries, list+watch with resume, and the
API's failures in the one error tree.

`objects` and `errors` import no client; `client`, `cluster` and `watch` do.
The routers and the ModelRollout source go through here; the status writer takes
its merge patch from here.
"""
