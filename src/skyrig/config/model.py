"""Typed model of one skyrig environment (one Pulumi stack file, ``skyrig:`` namespace).

One class per concept. Field-level rules live here (types, ranges, patterns); rules that relate
several fields or sections live in :mod:`skyrig.config.checks` so that every problem is reported at
once with its file, line and key path.

Each field is documented by its ``Field(description=...)`` (docs/stack-reference.md is generated
from them, with each model's first docstring paragraph); units are in the key names: ``*_mib``
MiB, ``*_gib`` GiB, ``*_s``/``*_seconds*`` seconds. Invalid values raise pydantic's
``ValidationError``, which :func:`skyrig.config.loader.validate_source` turns into one
:class:`skyrig.errors.SkyrigConfigError`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

PCI_CARD_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}$")
NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
CONFIGID_RE = r"^[a-z][a-z0-9_-]{1,127}$"
SEMVER_RE = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"

Name = Annotated[str, Field(pattern=NAME_RE, description="DNS-label style name")]


#: PVE's ``pve-tag`` format (PVE::JSONSchema ``pve_verify_tag``, the rule behind the vendored
#: schema's ``pve-tag-list`` format; the same rule pvesim enforces). Vendored here because
#: skyrig's core never imports pvesim and the schema JSON names the format, not its rule.
PVE_TAG_RE = r"^(?i:[a-z0-9_][a-z0-9_\-+.]*)$"


def pulumi_ciphertext_problem(value: str) -> str | None:
    """Say why ``value`` is not Pulumi ciphertext, or None when it has the form.

    Pulumi stores ``pulumi config set --secret`` values as ``v1:<nonce>:<ciphertext>``, both
    standard base64 (AES-256-GCM: a 12-byte nonce, ciphertext at least the 16-byte tag), see
    Pulumi's ``symmetricCrypter.EncryptValue``. Only the form is checked, nothing is decrypted.

    Args:
        value: The ``secure:`` value of a stack file.

    Returns:
        A message for the config issue, or ``None`` when the form is right.
    """
    import base64
    import binascii

    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "v1":
        return "`secure:` is not Pulumi ciphertext (expected `v1:<nonce>:<ciphertext>`)"
    try:
        nonce = base64.b64decode(parts[1], validate=True)
        body = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        return "`secure:` is not Pulumi ciphertext (nonce and ciphertext must be base64)"
    if len(nonce) != 12 or len(body) < 16:
        return "`secure:` is not Pulumi ciphertext (AES-GCM: 12-byte nonce, >= 16-byte body)"
    return None


def _text_or_parsed(kind: type) -> Any:
    def check(v: Any) -> Any:
        if isinstance(v, (kind, str)):
            return v
        raise ValueError(f"expected text such as '10.0.0.1' or '10.0.0.0/24',"
                         f" not {type(v).__name__}")

    return BeforeValidator(check)


#: IPv4 address / network given as text: parsed from a string (strict mode would refuse the
#: string), never from a number.
IPv4Addr = Annotated[ipaddress.IPv4Address, _text_or_parsed(ipaddress.IPv4Address),
                     Field(strict=False)]
IPv4Net = Annotated[ipaddress.IPv4Network, _text_or_parsed(ipaddress.IPv4Network),
                    Field(strict=False)]


class Strict(BaseModel):
    """Base: unknown keys are errors, values are not coerced silently.

    ``strict=True``: no bool/float into an int, no number into a string; ``allow_inf_nan=False``:
    ``.inf``/``.nan`` are refused for every float. Fields that parse text (IP addresses,
    networks) opt back into lax parsing of *strings* only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True,
                              allow_inf_nan=False)


class SecretRef(Strict):
    """A secret value. Never plain text in a stack file.

    ``secure`` holds a Pulumi-encrypted value (``pulumi config set --secret``); when Pulumi is not
    the caller the value is read from the environment variable ``env`` instead.
    """

    secure: str | None = Field(None, description="Pulumi-encrypted ciphertext (v1:...).")
    env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable that holds the secret when Pulumi is not the caller.",
    )

    @field_validator("secure")
    @classmethod
    def _ciphertext(cls, v: str | None) -> str | None:
        if v is not None:
            problem = pulumi_ciphertext_problem(v)
            if problem:
                raise ValueError(problem + "; set it with `pulumi config set --secret`")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if not self.secure and not self.env:
            raise ValueError("a secret needs `secure:` (Pulumi secret) or `env:` (variable name)")
        return self


class ProxmoxEndpoint(Strict):
    """How to reach the Proxmox VE API, and how provisioning behaves there."""

    endpoint: str = Field(
        description="API base URL (https://host:8006), or `pvesim` for the embedded emulator.",
    )
    token_id: str = Field(
        "skyrig@pve!provision",
        pattern=r"^[^@\s]+@[^!\s]+![A-Za-z][A-Za-z0-9._-]*$",
        description="API token id `user@realm!tokenid` (least privilege: docs/provisioning.md).",
    )
    token_secret: SecretRef = Field(
        default_factory=lambda: SecretRef(env="SKYRIG_PROXMOX_TOKEN_SECRET"),
        description="The token's secret: a Pulumi secret or an environment variable.",
    )
    verify_tls: bool = Field(True, description="Verify the API certificate (never off in prod).")
    ca_bundle: str | None = Field(
        None, description="CA bundle path for a private CA; pvesim's CA is used for `pvesim`."
    )
    reboot_policy: Literal["never", "when-required"] = Field(
        "never",
        description="`never` reports pending-reboot changes; `when-required` reboots VMs one at"
        " a time.",
    )
    task_timeout_s: float = Field(900.0, gt=0, description="Longest wait for one Proxmox task.")
    parallelism: int = Field(4, ge=1, le=32, description="VMs provisioned concurrently.")
    pvesim_hardware: str = Field(
        "local", description="Hardware profile for the embedded pvesim (`local`, `lab`, a path)."
    )

    @property
    def embedded(self) -> bool:
        """Whether the stack runs against the embedded pvesim (``endpoint: pvesim``)."""
        return self.endpoint == "pvesim"

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != "pvesim" and not re.match(r"^https://[A-Za-z0-9.\-\[\]:]+(:\d+)?/?", v):
            raise ValueError("must be an https:// URL (TLS is mandatory) or `pvesim`")
        return v.rstrip("/")


class Network(Strict):
    """The guest network the VMs are attached to."""

    bridge: str = Field("vmbr0", pattern=r"^vmbr\d+$", description="Proxmox bridge.")
    vlan: int | None = Field(None, ge=1, le=4094, description="VLAN tag on the bridge.")
    subnet: IPv4Net = Field(description="Guest subnet (CIDR).")
    gateway: IPv4Addr = Field(description="Default gateway for the guests.")
    nameservers: list[IPv4Addr] = Field(
        default_factory=list, max_length=3, description="DNS servers for cloud-init."
    )
    search_domain: str | None = Field(None, description="DNS search domain for cloud-init.")
    mtu: int | None = Field(None, ge=576, le=9000, description="Guest NIC MTU.")


class Gpu(Strict):
    """A physical GPU card in a node, by PCI address (all functions: GPU + HDMI audio)."""

    path: str = Field(description="PCI card address with domain, no function: `0000:01:00`.")
    model: str = Field("rtx-a4000", description="GPU model key from the compatibility data.")

    @field_validator("path")
    @classmethod
    def _pci(cls, v: str) -> str:
        if not PCI_CARD_RE.match(v):
            raise ValueError(
                f"{v!r} is not a PCI card address; use `dddd:bb:ss` (lower-case hex, domain,"
                " no function), e.g. `0000:01:00`"
            )
        return v


class Node(Strict):
    """A Proxmox VE node: capacity, template, storage and GPUs."""

    name: Name = Field(description="Node name as Proxmox knows it.")
    address: str | None = Field(
        None, description="Host name or IP Ansible uses for the node (default: its name)."
    )
    ssh_user: str = Field("root", description="SSH user for host preparation.")
    cores: int = Field(ge=1, le=1024, description="Logical CPUs on the host.")
    memory_mib: int = Field(ge=1024, description="Host RAM in MiB.")
    reserved_memory_mib: int = Field(
        8192, ge=0, description="RAM kept for the hypervisor (ZFS ARC, PVE services)."
    )
    storage: str = Field("local-lvm", description="Storage for VM disks and EFI disks.")
    template_vmid: int = Field(
        ge=100, le=999_999_999, description="Cloud-init template on the node."
    )
    iommu: bool = Field(True, description="Whether IOMMU is expected on (host-prep sets it).")
    gpus: list[Gpu] = Field(default_factory=list, description="GPU cards in the node.")


class PciMappingEntry(Strict):
    """Where a cluster PCI mapping points on one node."""

    node: Name = Field(description="Node the entry is for.")
    path: str = Field(description="PCI card address on that node (`0000:01:00`).")

    @field_validator("path")
    @classmethod
    def _pci(cls, v: str) -> str:
        return Gpu._pci(v)


class PciMapping(Strict):
    """A cluster PCI resource mapping (`/cluster/mapping/pci`). Token-friendly passthrough."""

    id: str = Field(pattern=CONFIGID_RE, description="Mapping id (`pve-configid`).")
    model: str = Field("rtx-a4000", description="GPU model key from the compatibility data.")
    description: str = Field("", description="Free text shown in the PVE UI.")
    entries: list[PciMappingEntry] = Field(min_length=1, description="One entry per node.")
    adopt_existing: bool = Field(
        False,
        description="Take over a mapping with this id that skyrig did not create (made by hand "
        "or by another stack): skyrig then rewrites it, records it as its own and deletes it on "
        "`down`. Without it skyrig refuses to touch a foreign mapping.",
    )


class VmClass(Strict):
    """Reusable hardware profile for VMs."""

    cores: int = Field(ge=1, le=512, description="vCPU cores per socket.")
    sockets: int = Field(1, ge=1, le=4, description="CPU sockets.")
    memory_mib: int = Field(ge=512, description="RAM in MiB (pinned in full with a GPU).")
    balloon_mib: int = Field(0, ge=0, description="0 turns ballooning off (required with GPUs).")
    disk_gib: int = Field(32, ge=4, le=65536, description="Boot disk size after resize.")
    machine: Literal["q35", "pc"] = Field("q35", description="Machine type; GPUs need q35.")
    bios: Literal["ovmf", "seabios"] = Field("ovmf", description="Firmware; GPUs need ovmf.")
    cpu: str = Field("host", description="CPU type; GPU VMs need `host`.")
    efi_disk: bool = Field(True, description="An efidisk0 (4m, no pre-enrolled keys).")
    pcie: bool = Field(True, description="Attach GPUs as PCIe (needs q35).")
    numa: bool = Field(False, description="Expose NUMA topology to the guest.")
    tags: list[Annotated[str, Field(pattern=PVE_TAG_RE)]] = Field(
        default_factory=list, description="Extra PVE tags (PVE's pve-tag format).")
    onboot: bool = Field(True, description="Start the VM when the node boots.")


class GpuVm(Strict):
    """A VM cloned from its node's template; GPU VMs get mapped passthrough."""

    name: Name = Field(description="VM name (also the inventory host name).")
    vmid: int = Field(ge=100, le=999_999_999, description="Fixed VM id (changing it replaces).")
    node: Name = Field(description="Node the VM runs on (changing it replaces).")
    vm_class: str = Field(alias="class", description="Key in `skyrig:vm_classes`.")
    ip: IPv4Addr = Field(description="Static address set by cloud-init.")
    gpus: list[str] = Field(default_factory=list, description="PCI mapping ids to pass through.")
    roles: list[
        Literal["kube_control_plane", "kube_node", "ray_head", "ray_worker", "monitoring"]
    ] = Field(default_factory=list, description="Inventory groups the VM joins.")
    cores: int | None = Field(None, ge=1, le=512, description="Overrides the class.")
    memory_mib: int | None = Field(None, ge=512, description="Overrides the class.")
    disk_gib: int | None = Field(None, ge=4, le=65536, description="Overrides the class.")


class CloudInit(Strict):
    """Guest access set through cloud-init."""

    user: str = Field("skyrig", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="Guest user.")
    ssh_keys: list[str] = Field(default_factory=list, description="Public keys (not secrets).")

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+|sk-\S+) \S+", k):
                raise ValueError(f"not an SSH public key: {k[:30]!r}...")
        return v


class GpuStack(Strict):
    """Guest NVIDIA stack, pinned per the compatibility matrix."""

    driver_source: Literal["debian", "cuda_repo"] = Field(
        "cuda_repo", description="Debian non-free packages or NVIDIA's CUDA repository."
    )
    driver_version: str = Field(pattern=r"^\d{3}(\.\d+){0,2}$", description="Driver version.")
    cuda_version: str = Field(pattern=r"^\d+\.\d+$", description="CUDA toolkit major.minor.")
    open_kernel_modules: bool = Field(True, description="NVIDIA open GSP modules (Ampere+).")
    container_toolkit_version: str = Field(
        "1.17.8", pattern=r"^\d+\.\d+\.\d+$", description="NVIDIA container toolkit."
    )


class Kubernetes(Strict):
    """Kubernetes on the VMs (off for the local stack)."""

    enabled: bool = Field(True, description="Install Kubernetes on the VMs.")
    distribution: Literal["k3s"] = Field("k3s", description="Kubernetes distribution.")
    version: str = Field(
        "v1.33.4+k3s1",
        pattern=r"^v\d+\.\d+\.\d+(\+k3s\d+)?$",
        description="Pinned Kubernetes (k3s) release.",
    )
    pod_cidr: IPv4Net = Field(
        ipaddress.IPv4Network("10.244.0.0/16"), description="Pod network."
    )
    service_cidr: IPv4Net = Field(
        ipaddress.IPv4Network("10.96.0.0/12"), description="Service network."
    )
    install_binary: bool = Field(True, description="Off for air-gapped tests (artifact dir).")
    artifact_dir: str | None = Field(None, description="Local k3s artifacts (air-gapped).")


class Ray(Strict):
    """The Ray cluster that runs the workloads."""

    mode: Literal["local", "kuberay", "vm"] = Field(
        "kuberay", description="`local`: head started by skyrig on this machine."
    )
    version: str = Field(pattern=SEMVER_RE, description="Pinned Ray release.")
    kuberay_version: str | None = Field("1.7.0", pattern=SEMVER_RE, description="KubeRay.")
    head_port: int = Field(
        6379,
        ge=1024,
        le=65533,
        description="GCS port of the head; a local head also uses the next two ports.",
    )
    dashboard_host: str = Field("127.0.0.1", description="Bind address of the dashboard.")
    dashboard_port: int = Field(8265, ge=1024, le=65535, description="Dashboard/Jobs API port.")
    metrics_export_port: int = Field(8080, ge=1024, le=65535, description="Prometheus port.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local head.")
    gpu_workers_min: int = Field(0, ge=0, description="Autoscaler minimum GPU workers.")
    gpu_workers_max: int = Field(1, ge=0, description="Autoscaler maximum GPU workers.")
    gpus_per_worker: int = Field(1, ge=0, le=8, description="GPUs per Ray worker pod.")
    object_store_memory_mib: int = Field(512, ge=64, description="Ray object store size.")
    auth_mode: Literal["disabled", "token"] = Field(
        "disabled",
        description="Ray's authentication (RAY_AUTH_MODE); `token` needs RAY_AUTH_TOKEN set.",
    )
    dashboard_exposed: bool = Field(
        False,
        description="Acknowledge a dashboard/Jobs API bound beyond loopback (needs auth_mode"
        " token).",
    )


#: Largest scoring batch the stack accepts: the workload's own cap (``gpu_batch_size``).
MAX_SCORING_BATCH = 8192


class WorkloadScoring(Strict):
    """How the workload scores: batch size, GPUs per Ray actor, actors, precision, memory.

    Handed to the workload unchanged as ``QSO_SCORE_*`` environment variables of the Ray job
    (``qso_anomaly.score.ScoringConfig.from_env``); the defaults are the workload's own
    defaults (batch 256, CPU scoring, float32, pinned staging buffers, JAX allocating GPU
    memory on demand), so a stack without this section scores as before. Cross-key rules
    (GPUs against the Ray worker group, reduced precision against the workload's parity
    record) are in :func:`skyrig.config.checks.workload_scoring`.
    """

    batch_size: int = Field(
        256, ge=1, le=MAX_SCORING_BATCH,
        description="Spectra per model call (`QSO_SCORE_BATCH_SIZE`); on a GPU, what half of"
        " the card's memory holds (docs/benchmarks.md, GPU path).")
    num_gpus_per_actor: float = Field(
        0.0, ge=0, le=8,
        description="GPUs per Ray scorer actor (`QSO_SCORE_NUM_GPUS`): 0 scores on CPUs,"
        " 0.5 puts two actors on a card, whole numbers above 1; needs `use_gpu: true`.")
    concurrency: int | Literal["auto"] = Field(
        "auto",
        description="Ray scorer actors (`QSO_SCORE_CONCURRENCY`), or `auto`: sized from the"
        " resources Ray reports when scoring starts.")
    precision: Literal["float32", "tf32", "bfloat16"] = Field(
        "float32",
        description="GPU arithmetic (`QSO_SCORE_PRECISION`); `tf32`/`bfloat16` only where the"
        " workload's release/precision.yaml records scores within the parity tolerance.")
    pin_memory: bool = Field(
        True, description="Page-locked host buffers, asynchronous host-to-device copies"
        " (`QSO_SCORE_PIN_MEMORY`; GPU only).")
    jax_preallocate: bool = Field(
        False,
        description="Let JAX take 75 % of the card at start (`QSO_SCORE_JAX_PREALLOCATE`);"
        " off sets XLA_PYTHON_CLIENT_PREALLOCATE=false (needed when torch or a second actor"
        " shares the card).")

    @field_validator("num_gpus_per_actor")
    @classmethod
    def _ray_gpu_amount(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("Ray gives an actor a fraction of one GPU or whole GPUs"
                             " (e.g. 0.25, 0.5, 1, 2), not a fraction above 1")
        return v

    @field_validator("concurrency", mode="before")
    @classmethod
    def _actors(cls, v: object) -> object:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024):
            return v
        raise ValueError("a number of scorer actors from 1 to 1024, or `auto`")


#: What a ``workload.input`` path may hold besides letters and digits. The RayJob entrypoint
#: is parsed twice by a shell: KubeRay's submitter runs it with bash, ``ray job submit`` joins
#: the words again with :func:`subprocess.list2cmdline` (quotes only blanks) and Ray's job
#: supervisor runs that with ``/bin/sh`` -- so ``;``, ``$``, quotes, globs or backslashes in a
#: path would split it or run as code there, however the entrypoint quotes them.
INPUT_PATH_PUNCT = frozenset("._-/+@,=: ")


def _plain_input_path(item: str) -> str:
    parts = item.split("/")
    if not item.strip() or "\x00" in item or ".." in parts or "" in parts[1:-1]:
        raise ValueError(
            f"{item!r} is not a plain path: give a non-empty path without `..` or"
            " empty segments (e.g. dr1/healpix/main/dark)")
    if item != item.strip():
        raise ValueError(f"{item!r} starts or ends with a blank: remove it")
    odd = sorted({c for c in item if not (c.isalnum() or c in INPUT_PATH_PUNCT)})
    if odd:
        raise ValueError(
            f"{item!r} holds {' '.join(repr(c) for c in odd)}, which the job's shell would"
            " read as syntax (the RayJob entrypoint is parsed by a shell twice): rename the"
            " files or link them under a name of letters, digits, blanks and ._-/+@,=:")
    return item


InputPath = Annotated[str, AfterValidator(_plain_input_path)]


class WorkloadInput(Strict):
    """What the workload scores: its own synthetic survey, or DESI files.

    ``desi`` hands the files to ``qso_anomaly.pipeline --data … [--redshifts …]``: Parquet
    shards or DESI healpix ``coadd-*.fits`` (files or directories), with redrock or zcatalog
    redshift files matched by TARGETID (default: the ``redrock-*`` files next to the coadds).
    Where the paths live depends on where the job runs (:func:`skyrig.plan.workload.input_args`):
    a KubeRay job reads them on the data volume (relative to ``skyrig:platform.data.mount_path``),
    a local job on this machine (relative to the project root, or absolute). Cross-key rules are
    in :func:`skyrig.config.checks.workload_input`.
    """

    kind: Literal["synthetic", "desi"] = Field(
        "synthetic",
        description="`synthetic`: the workload's seeded survey of n_spectra; `desi`: score the"
        " DESI files under `paths`.")
    paths: list[InputPath] = Field(
        default_factory=list,
        description="Coadd or Parquet files or directories (`--data`); relative to the data"
        " volume's mount path on Kubernetes, to the project root (or absolute) locally.")
    redshifts: list[InputPath] = Field(
        default_factory=list,
        description="redrock-*.fits or zcatalog files (`--redshifts`), resolved as `paths`.")


class Workload(Strict):
    """Which workload release and model run where."""

    name: Literal["qso_anomaly"] = Field("qso_anomaly", description="Workload package.")
    version: str = Field(pattern=SEMVER_RE, description="Released version (CHANGELOG).")
    path: str = Field("workloads/qso_anomaly", description="Package source, relative to the repo.")
    model_alias: Literal["candidate", "champion"] = Field(
        "champion", description="Registered model alias to score with."
    )
    framework: Literal["torch", "jax"] = Field("torch", description="Framework that scores.")
    torch_version: str = Field("2.13.0", pattern=SEMVER_RE, description="PyTorch release.")
    jax_version: str = Field("0.10.2", pattern=SEMVER_RE, description="JAX release.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: sqlite store under the run directory."
    )
    n_spectra: int = Field(2000, ge=50, description="Spectra per run (small data for local).")
    use_gpu: bool = Field(False, description="Train and score on GPUs.")
    model_size: Literal["ci", "full"] = Field(
        "ci",
        description="Model a training run builds: `ci` (4x downsampled grid, small channels) or"
        " `full` (the full 7,781-pixel grid; GPU-sized). Scoring an existing alias uses the"
        " registered version's own spec.")
    seed: int = Field(20261127, description="Seed of the synthetic survey and training.")
    scoring: WorkloadScoring = Field(
        WorkloadScoring(), description="Scoring batch size, GPUs per actor, actors, precision.")
    input: WorkloadInput = Field(
        WorkloadInput(), description="What the job scores: the synthetic survey or DESI files.")


class Monitoring(Strict):
    """Metrics, alerts and dashboards."""

    enabled: bool = Field(True, description="Deploy exporters, rules and dashboards.")
    namespace: str = Field("monitoring", pattern=NAME_RE, description="Kubernetes namespace.")
    scrape_interval: str = Field("30s", pattern=r"^\d+[smh]$", description="Prometheus scrape.")
    node_exporter_port: int = Field(9100, ge=1, le=65535, description="node exporter port.")
    dcgm_exporter: bool = Field(True, description="DCGM exporter on GPU guests.")
    dcgm_exporter_port: int = Field(9400, ge=1, le=65535, description="DCGM exporter port.")
    gpu_temp_alert_c: int = Field(85, ge=50, le=110, description="GPU temperature alert.")
    anomaly_drift_psi_alert: float = Field(0.2, gt=0, le=10, description="Score-drift alert.")
    anomaly_rejected_ratio_alert: float = Field(
        0.05, gt=0, le=1,
        description="Alert when rejected / submitted spectra of a run exceeds this ratio (0-1).")
    rayjob_deadline_s: int = Field(
        3600, ge=60, description="Alert when a RayJob has run longer than this (seconds).")
    runbook_base_url: str = Field(
        "runbooks",
        description="Base of every alert's runbook_url (`<base>/<runbook-id>.md`); a path or URL.")
    local_port_base: int | None = Field(
        None, ge=1024, le=65000,
        description="First of 8 loopback ports of the local monitoring stack (Prometheus,"
        " Alertmanager, Pushgateway, node/PVE exporters, receiver); default derived from the"
        " stack name.")


class Governance(Strict):
    """NIST AI RMF governance settings."""

    framework: Literal["NIST-AI-RMF-1.0"] = Field("NIST-AI-RMF-1.0", description="Framework.")
    risk_owner: str = Field(description="Who accepts the residual risk of a release.")
    release_gates: str = Field(
        "workloads/qso_anomaly/release/thresholds.yaml", description="Gates for `champion`."
    )
    require_model_card: bool = Field(True, description="No release without a model card.")
    human_review_top_k: int = Field(100, ge=0, description="Flagged spectra reviewed by people.")


class DataVolume(Strict):
    """Where the survey data lives in the cluster; Ray workers mount it read-only."""

    kind: Literal["pvc", "nfs"] = Field("pvc", description="An existing PVC, or an NFS export.")
    claim_name: str | None = Field(
        None, pattern=NAME_RE, description="PersistentVolumeClaim name (kind pvc)."
    )
    size_gib: int = Field(100, ge=1, description="Size of the claim skyrig creates (kind pvc).")
    storage_class: str | None = Field(None, description="StorageClass of the claim (kind pvc).")
    nfs_server: str | None = Field(None, description="NFS server host name (kind nfs).")
    nfs_path: str | None = Field(None, pattern=r"^/", description="Exported path (kind nfs).")
    mount_path: str = Field("/data", pattern=r"^/", description="Mount point in Ray pods.")


class ResultsVolume(Strict):
    """The writable volume the workload writes reports, metrics and model cards to."""

    claim_name: str = Field("qso-results", pattern=NAME_RE, description="PVC name.")
    size_gib: int = Field(50, ge=1, description="PVC size.")
    storage_class: str | None = Field(None, description="StorageClass (default class if unset).")
    mount_path: str = Field("/results", pattern=r"^/", description="Mount point in Ray pods.")


class MlflowServer(Strict):
    """The MLflow tracking server the RayJob reports to."""

    mode: Literal["external", "in-cluster"] = Field(
        "external",
        description="`external`: skyrig:workload.tracking_uri; `in-cluster`: skyrig deploys one.",
    )
    image: str = Field(
        "ghcr.io/mlflow/mlflow:v3.6.0",
        pattern=r"^[a-z0-9.\-/:]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$",
        description="Image of the in-cluster server (immutable tag or digest).",
    )
    port: int = Field(5000, ge=1024, le=65535, description="Port of the in-cluster server.")
    storage_gib: int = Field(
        20, ge=1, description="PVC of the in-cluster store (sqlite + artifacts)."
    )


class WorkloadImage(Strict):
    """The container image the RayJob runs (built by workloads/qso_anomaly/Containerfile)."""

    repository: str = Field(
        "registry.astro-lab.internal/skyrig/qso-anomaly",
        pattern=r"^[a-z0-9.\-/:]+$",
        description="Image repository (no tag).",
    )
    tag: str | None = Field(
        None,
        pattern=r"^[0-9A-Za-z._-]+$",
        description="Immutable tag `<workload version>-<variant>`; default from the workload"
        " version and `variant`.",
    )
    variant: Literal["cuda", "cpu"] = Field("cuda", description="CUDA or CPU build.")
    digest: str | None = Field(
        None, pattern=r"^sha256:[0-9a-f]{64}$", description="Pin by digest (wins over the tag)."
    )


class Platform(Strict):
    """The Kubernetes platform layer (dev/prod): namespaces, GPU add-ons, KubeRay, volumes."""

    kubeconfig: SecretRef | None = Field(
        None,
        description="Kubeconfig secret: `secure:` (pulumi config set --secret) or `env:`"
        " (a variable holding the kubeconfig text); else .skyrig/<stack>/kubeconfig.",
    )
    namespace: str = Field("skyrig-ray", pattern=NAME_RE, description="Workload namespace.")
    operator_namespace: str = Field(
        "kuberay-system", pattern=NAME_RE, description="KubeRay operator namespace."
    )
    device_plugin_version: str = Field(
        "0.20.0", pattern=SEMVER_RE, description="NVIDIA k8s-device-plugin release."
    )
    gpu_feature_discovery: bool = Field(False, description="Deploy GPU Feature Discovery.")
    system_reserve_cpu: int = Field(
        2, ge=1, description="vCPUs a GPU worker VM keeps for k3s, kubelet and DaemonSets."
    )
    system_reserve_memory_mib: int = Field(
        8192, ge=1024, description="RAM a GPU worker VM keeps for the OS, k3s and DaemonSets."
    )
    head_cpu: int = Field(2, ge=1, description="CPU request/limit of the Ray head pod.")
    head_memory_mib: int = Field(4096, ge=1024, description="Memory of the Ray head pod.")
    data: DataVolume = Field(DataVolume(), description="Survey data volume (read-only).")
    results: ResultsVolume = Field(ResultsVolume(), description="Writable results volume.")
    mlflow: MlflowServer = Field(MlflowServer(), description="MLflow tracking server.")
    image: WorkloadImage = Field(WorkloadImage(), description="Workload image of the RayJob.")
    job_ttl_seconds_after_finished: int = Field(
        86400, ge=0, description="Seconds a finished RayJob's cluster objects are kept."
    )
    job_backoff_limit: int = Field(0, ge=0, le=10, description="RayJob retries.")
    job_deadline_s: int = Field(
        21600, ge=60, description="activeDeadlineSeconds of a RayJob (and the up wait)."
    )
    api_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Timeout of one Kubernetes API call (connect + read)."
    )

    @field_validator("kubeconfig", mode="before")
    @classmethod
    def _no_plaintext(cls, v: object) -> object:
        if isinstance(v, str):
            raise ValueError(
                "a kubeconfig is a secret and never plain text in a stack file; use"
                " `pulumi config set --secret skyrig:platform ...` (`secure:`) or"
                " `{env: VARIABLE}`"
            )
        return v


class StackConfig(Strict):
    """Everything one environment is (the ``skyrig:`` keys of ``stacks/Pulumi.<env>.yaml``)."""

    environment: Literal["local", "dev", "prod"] = Field(description="Which environment this is.")
    proxmox: ProxmoxEndpoint = Field(description="The Proxmox VE API and provisioning behaviour.")
    network: Network = Field(description="Guest network.")
    nodes: list[Node] = Field(min_length=1, description="Proxmox nodes with capacity and GPUs.")
    pci_mappings: list[PciMapping] = Field(
        default_factory=list, description="Cluster PCI mappings (one per GPU card)."
    )
    vm_classes: dict[str, VmClass] = Field(min_length=1, description="Named VM hardware profiles.")
    vms: list[GpuVm] = Field(default_factory=list, description="VMs to clone and configure.")
    cloud_init: CloudInit = Field(CloudInit(), description="Guest user and SSH keys.")
    gpu_stack: GpuStack = Field(description="Guest NVIDIA driver, CUDA, container toolkit.")
    kubernetes: Kubernetes = Field(Kubernetes(), description="Kubernetes on the VMs.")
    ray: Ray = Field(description="The Ray cluster.")
    workload: Workload = Field(description="Pinned workload release and model alias.")
    monitoring: Monitoring = Field(Monitoring(), description="Metrics, alerts, dashboards.")
    governance: Governance = Field(description="NIST AI RMF governance settings.")
    platform: Platform = Field(
        Platform(), description="Kubernetes platform: namespaces, KubeRay, volumes, MLflow."
    )
