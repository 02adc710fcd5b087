"""The least privilege set skyrig's provisioning token needs.

Documented in docs/provisioning.md and exercised against pvesim's permission checks; privilege
names and ACL paths follow the PVE user management docs (pveum, "Privileges" and "Objects and
Paths") and the permission line of each API call in the PVE API viewer.
"""

from __future__ import annotations

#: ACL path → privileges (grant to the token with ``propagate=1``; the token has privsep).
MINIMAL_PRIVILEGES: dict[str, tuple[str, ...]] = {
    # hardware/pci (measured mappings), task status/log, cluster resources of nodes
    "/": ("Sys.Audit",),
    # clone, configure, resize, power, destroy, read back, guest agent IPs
    "/vms": ("VM.Allocate", "VM.Clone", "VM.Audit", "VM.Config.Disk", "VM.Config.CPU",
             "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType", "VM.Config.Options",
             "VM.Config.Cloudinit", "VM.PowerMgmt", "VM.Monitor"),
    # full clones and EFI disks allocate space on the target storage
    "/storage": ("Datastore.AllocateSpace", "Datastore.Audit"),
    # create/update mappings from measured hardware, and attach them (hostpciN: mapping=...)
    "/mapping/pci": ("Mapping.Audit", "Mapping.Modify", "Mapping.Use"),
    # attach NICs to bridges (PVE 8 checks SDN.Use on the bridge's zone)
    "/sdn/zones": ("SDN.Use",),
}

#: The PVE role names skyrig suggests for these grants.
ROLE_NAME = "SkyrigProvisioner"
