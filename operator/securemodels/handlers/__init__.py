"""The I/O side of the operator: reconcile SMDs, keep the CA, and wire both into kopf."""
