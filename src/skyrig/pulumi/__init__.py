"""Pulumi shells over the reconcile core: dynamic providers and components."""
