"""skyrig: provision Proxmox GPU VMs, the guest GPU stack, Ray, and versioned anomaly workloads."""

__version__ = "0.1.0"
