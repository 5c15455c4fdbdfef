"""Pydantic models of every resource kind a manifest or role can declare."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from provisioner.agent.distributions import normalize
from provisioner.values import (
    EnvKey,
    EnvValue,
    GitRef,
    ModelPath,
    Name,
    OwnedPath,
    PinnedRequirement,
    RelativePath,
    SingleLine,
    Url,
    VenvPath,
    check_absolute_path,
    check_relative_path,
    check_url,
)

_MODE = re.compile(r"^0?[0-7]{3,4}$")


def _check_mode(value: str | None) -> str | None:
    if value is None:
        return None
    if not _MODE.match(value):
        raise ValueError(f"mode {value!r} must be an octal string such as '0755' (quote it in YAML)")
    return value.zfill(4)


#: Which program installs packages: uv where the host has it (auto), always uv (installed when missing), or pip.
Installer = Literal["auto", "uv", "pip"]
_INSTALLER_DOC = "auto, uv or pip; unset: the manifest's python.installer (see README: Installers)."


def _check_links(links: list[str]) -> list[str]:
    """find-links entries: URLs, or folders relative to the target root."""
    return [check_url(link) if "://" in link else check_relative_path(link) for link in links]


class ResourceBase(BaseModel):
    """Fields every resource shares."""

    model_config = ConfigDict(extra="forbid")

    notify: list[Name] = Field(default_factory=list, description="Handlers to run once if this resource changed.")
    requires: list[str] = Field(default_factory=list, description=(
        "Ids of resources (kind:key) this one waits for, beyond those its paths imply; it is skipped when one fails."))

    def key(self) -> str:
        raise NotImplementedError


class Removable(BaseModel):
    """`state: absent` removes what the resource made (large data included: saying so is explicit)."""

    state: Literal["present", "absent"] = Field(
        default="present", description="absent: remove it from the host (plan shows what goes and its bytes).")


class DirectorySpec(Removable, ResourceBase):
    kind: Literal["directory"] = "directory"
    path: ModelPath = Field(description="Under the root, or inside one of target.extra_roots (model folders).")
    mode: str | None = Field(default=None, description="Octal mode, e.g. '0755'.")
    owner: Name | None = None
    group: Name | None = None

    _mode = field_validator("mode")(_check_mode)

    def key(self) -> str:
        return self.path


class FileSpec(Removable, ResourceBase):
    kind: Literal["file"] = "file"
    path: OwnedPath
    content: str | None = Field(default=None, description="Literal content.")
    template: str | None = Field(default=None, description="A jinja2 template under templates/ (or a role path).")
    vars: dict[str, Any] = Field(default_factory=dict, description="Extra variables for the template.")
    mode: str | None = None
    owner: Name | None = None
    group: Name | None = None

    _mode = field_validator("mode")(_check_mode)

    @model_validator(mode="after")
    def _one_source(self) -> FileSpec:
        if self.state == "absent" and self.content is None and self.template is None:
            self.content = ""  # nothing to write: the file goes
        if (self.content is None) == (self.template is None):
            raise ValueError("a file needs exactly one of 'content' or 'template'")
        return self

    def key(self) -> str:
        return self.path


class SecretFromEnv(BaseModel):
    """A secret read from the controller's environment; never written to argv, logs or state."""

    model_config = ConfigDict(extra="forbid")

    from_env: EnvKey
    optional: bool = False


class EnvFileSpec(Removable, ResourceBase):
    kind: Literal["envfile"] = "envfile"
    path: OwnedPath
    values: dict[EnvKey, EnvValue] = Field(default_factory=dict)
    secrets: dict[EnvKey, SecretFromEnv] = Field(default_factory=dict)
    mode: str | None = "0600"

    _mode = field_validator("mode")(_check_mode)

    @field_validator("values", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _env_value(v) for k, v in value.items()}
        return value

    def key(self) -> str:
        return self.path


def _env_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return value


class VenvSpec(Removable, ResourceBase):
    kind: Literal["venv"] = "venv"
    path: VenvPath
    adopt: bool = Field(default=False, description="Someone else's venv (python.adopt): used as it is, never "
                        "created, rebuilt or removed.")
    python: str = Field(
        default="python3",
        description="Interpreter: a version ('3.11'), a command on PATH ('python3.11') or an absolute path.",
        pattern=r"^(/?[A-Za-z0-9._/-]+)$",
    )
    system_site_packages: bool = False
    installer: Installer | None = Field(default=None, description=_INSTALLER_DOC + " With uv, the venv is made "
                                        "without pip and uv installs the pip wheel the interpreter bundles.")
    index_url: Url | None = Field(default=None, description="Where uv comes from for installer: uv on a host "
                                  "without one (then pip's configured index); the stack passes vars.pip_index_url.")

    @model_validator(mode="after")
    def _adopted_stays(self) -> VenvSpec:
        if self.adopt and self.state == "absent":
            raise ValueError("an adopted venv is someone else's: provision never removes it; drop state: absent")
        return self

    def key(self) -> str:
        return self.path


class PinnedPackage(BaseModel):
    """A package pin with an optional required origin (a wheel URL and its sha256)."""

    model_config = ConfigDict(extra="forbid")

    requirement: PinnedRequirement
    url: Url | None = Field(default=None, description="Install from this wheel URL instead of the index.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class UnrelatedPackage(BaseModel):
    """A package name two projects share: installed without `marker_module`, it is the other project and goes."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    marker_module: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="A module only the wanted project ships (nunchaku._C); local builds are kept too.",
    )
    label: str = Field(default="an unrelated package of the same name", max_length=120,
                       description="What the other project is, for the plan line.")


class PipSpec(Removable, ResourceBase):
    kind: Literal["pip"] = "pip"
    venv: VenvPath
    packages: list[PinnedRequirement | PinnedPackage] = Field(default_factory=list)
    remove_unrelated: list[UnrelatedPackage] = Field(
        default_factory=list, description="Same-named packages of another project to uninstall (PyPI's nunchaku)."
    )
    index_url: Url | None = None
    extra_index_urls: list[Url] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list, description="URLs, or paths relative to the target root.")
    no_deps: bool = False
    constraints: list[PinnedRequirement] = Field(
        default_factory=list, description="Pins pip must keep (e.g. torch==2.7.1), so a dependency cannot replace them."
    )
    name: Name | None = Field(default=None, description="Distinguishes several pip resources on one venv.")
    installer: Installer | None = Field(default=None, description=_INSTALLER_DOC)

    _links = field_validator("find_links")(_check_links)

    @model_validator(mode="after")
    def _something_to_do(self) -> PipSpec:
        if not self.packages and not self.remove_unrelated:
            raise ValueError("a pip resource needs packages to install (or remove_unrelated entries)")
        pinned = {_distribution(p.requirement if isinstance(p, PinnedPackage) else p) for p in self.packages}
        both = sorted(pinned & {_distribution(u.name) for u in self.remove_unrelated})
        if both:
            raise ValueError(f"{', '.join(both)} is both pinned and in remove_unrelated; the pin already "
                             "replaces an unrelated package of that name")
        return self

    def key(self) -> str:
        return f"{self.venv}#{self.name}" if self.name else self.venv


def _distribution(requirement: str) -> str:
    """PEP 503 normal form of the name in `name[extras]==version`."""
    return normalize(re.split(r"[\[=]", requirement, maxsplit=1)[0])


class RequirementsSpec(Removable, ResourceBase):
    """A requirements.txt (ComfyUI's or a plugin's) installed into a venv under constraints."""

    kind: Literal["requirements"] = "requirements"
    venv: VenvPath
    file: OwnedPath
    constraints: list[PinnedRequirement] = Field(default_factory=list)
    index_url: Url | None = None
    extra_index_urls: list[Url] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list)
    installer: Installer | None = Field(default=None, description=_INSTALLER_DOC)

    _links = field_validator("find_links")(_check_links)

    def key(self) -> str:
        return self.file


class GitSpec(Removable, ResourceBase):
    kind: Literal["git"] = "git"
    path: OwnedPath
    repo: Url
    ref: GitRef = "HEAD"
    force: bool = Field(default=False, description="Discard local modifications and untracked files.")

    def key(self) -> str:
        return self.path


class HubFile(BaseModel):
    """Where a download is on the Hugging Face Hub, so the host can take it from its Hugging Face cache or
    fetch it with huggingface_hub in `python`'s venv (the URL stays the fallback)."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    revision: GitRef = "main"
    file: RelativePath = Field(description="Path inside the repo.")
    python: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._/+-]+$",
        description="The venv's interpreter: relative to the root (venv/bin/python) or absolute (an adopted venv).")


class DownloadSpec(Removable, ResourceBase):
    """A large file over HTTP(S): resumable, verified by sha256, checked through a stat cache."""

    kind: Literal["download"] = "download"
    path: ModelPath = Field(description="Under the root, or inside one of target.extra_roots (model files).")
    url: Url
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(default=None, ge=0, description="Bytes; lets the disk check run before downloading.")
    auth: SecretFromEnv | None = Field(default=None, description="Bearer token, e.g. HF_TOKEN for gated repos.")
    hub: HubFile | None = Field(default=None, description="The file's repo, revision and path on the Hub.")

    def key(self) -> str:
        return self.path


class BuildSubmodule(BaseModel):
    """A git submodule a source build checks out, from `url` (mirrors applied) at the tree's gitlink."""

    model_config = ConfigDict(extra="forbid")

    path: RelativePath
    url: Url
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$",
                               description="The gitlink the tree must hold; null: whatever the tree names.")


class BuildPrerequisites(BaseModel):
    """What the host must have before a source build fetches or compiles anything."""

    model_config = ConfigDict(extra="forbid")

    nvcc_major: str | None = Field(
        default=None, pattern=r"^[0-9]+$",
        description="torch.version.cuda's major: torch's cpp_extension refuses another nvcc.")
    gcc_min: int = Field(default=11, ge=1, le=99)
    ninja: bool = True
    python_headers: bool = True
    min_free_bytes: int = Field(default=0, ge=0, description="Free space the workdir's filesystem needs.")
    job_memory_bytes: int = Field(default=4 << 30, gt=0, description="Memory one compiler job takes at most.")


_BUILD_ENV_KEYS = ("NUNCHAKU_INSTALL_MODE", "NUNCHAKU_BUILD_WHEELS", "CC", "CXX", "CUDA_HOME")
_SM = r"^[0-9]{2,3}a?$"


class WheelBuildSpec(ResourceBase):
    """A wheel compiled on the host from a git tag with submodules, staged in `workdir` so a killed build
    resumes from its finished objects; the wheel appears at `path` only once whole."""

    kind: Literal["wheel_build"] = "wheel_build"
    path: OwnedPath = Field(description="The final wheel file; the built wheel's name must equal its name.")
    project: Name = Field(description="For messages, e.g. nunchaku.")
    repo: Url
    ref: GitRef
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$", description="What `ref` must resolve to.")
    submodules: list[BuildSubmodule] = Field(default_factory=list)
    python: str = Field(
        description="The venv's interpreter: relative to the root (venv/bin/python) or absolute (an adopted venv).",
        pattern=r"^[A-Za-z0-9._/+-]+$",
    )
    workdir: OwnedPath = Field(description="Staged source and build objects, kept for resume.")
    env: dict[EnvKey, EnvValue] = Field(default_factory=dict)
    add_supported_arches: list[str] = Field(
        default_factory=list, description="Diagnostics override: SMs added to setup.py's supported list (['90'])."
    )
    expect_arches: list[str] = Field(default_factory=list, description="SM targets the build must report.")
    prerequisites: BuildPrerequisites = Field(default_factory=BuildPrerequisites)
    max_jobs: int | None = Field(default=None, ge=1, le=1024, description="null: from cores and memory.")
    build_key: str = Field(pattern=r"^[0-9a-f]{8,128}$", description="Recorded with the wheel; another key is drift.")

    @field_validator("python")
    @classmethod
    def _interpreter(cls, value: str) -> str:
        return check_absolute_path(value) if value.startswith("/") else check_relative_path(value)

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(_BUILD_ENV_KEYS))
        if unknown:
            raise ValueError(f"build env may set only {', '.join(_BUILD_ENV_KEYS)}; not {', '.join(unknown)}")
        mode = value.get("NUNCHAKU_INSTALL_MODE")
        if mode is not None and mode not in ("FAST", "ALL"):
            raise ValueError(f"NUNCHAKU_INSTALL_MODE must be FAST or ALL, not {mode!r}")
        for key in ("CC", "CXX", "CUDA_HOME"):
            if key in value:
                check_absolute_path(value[key])
                if not value[key].startswith("/"):
                    raise ValueError(f"{key} must be an absolute path, not {value[key]!r}")
        return value

    @field_validator("add_supported_arches", "expect_arches")
    @classmethod
    def _sms(cls, value: list[str]) -> list[str]:
        bad = [sm for sm in value if not re.match(_SM, sm)]
        if bad:
            raise ValueError(f"{', '.join(bad)} is not an SM as setup.py writes it: '90', '120a'")
        return value

    @field_validator("path")
    @classmethod
    def _wheel_name(cls, value: str) -> str:
        if not value.endswith(".whl") or value.rsplit("/", 1)[-1].count("-") < 4:
            raise ValueError(f"{value!r} is not a wheel file name (name-version-python-abi-platform.whl)")
        return value

    @model_validator(mode="after")
    def _distinct_paths(self) -> WheelBuildSpec:
        paths = [s.path.strip("/") for s in self.submodules]
        if len(set(paths)) != len(paths):
            raise ValueError("a submodule path is listed twice")
        wheel, work = self.path.strip("/"), self.workdir.strip("/")
        if wheel == work or wheel.startswith(work + "/") or work.startswith(wheel + "/"):
            raise ValueError("the wheel path and the workdir must not contain each other")
        return self

    def key(self) -> str:
        return self.path
# Written into a unit's Environment= line unquoted: only characters systemd reads literally.
ServiceEnvValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.,:/+@-]*$")]


class HttpReadiness(BaseModel):
    """The service is ready when GET http://HOST:PORT/PATH answers 200 (with a JSON body when `expect_json`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", pattern=r"^[0-9A-Za-z.:,-]+$",
                      description="The service's listen address; a wildcard (0.0.0.0, ::) is probed on loopback.")
    port: int = Field(ge=1, le=65535)
    path: str = Field(default="/", pattern=r"^/[A-Za-z0-9/_.-]*$")
    expect_json: bool = Field(default=False, description="The answer must be a JSON document.")


class ServiceUnitSpec(ResourceBase):
    """A long-running program: a systemd unit where systemd runs, else a supervised process."""

    kind: Literal["service"] = "service"
    name: Name
    argv: list[str] = Field(min_length=1, description="argv[0] may be relative to the root, e.g. venv/bin/python.")
    cwd: RelativePath | None = None
    env_file: OwnedPath | None = None
    env: dict[EnvKey, ServiceEnvValue] = Field(
        default_factory=dict, description="Variables of this service alone (CUDA_VISIBLE_DEVICES); over env_file's.")
    log: OwnedPath | None = Field(default=None, description="Log file of the process manager (logs/NAME.log).")
    manager: Literal["auto", "systemd", "process"] = "auto"
    state: Literal["running", "stopped", "absent"] = Field(
        default="running", description="absent: stop it (through its verified record) and remove its unit.")
    description: SingleLine = Field(default="", description="The unit's Description= line.")
    settle_seconds: float = Field(default=1.0, ge=0, le=60,
                                  description="Without `ready`: how long it must survive after start.")
    ready: HttpReadiness | None = Field(default=None, description="Health probe that defines 'started'.")
    ready_timeout: float = Field(default=180.0, gt=0, le=3600,
                                 description="Seconds a start or restart may take to pass `ready`.")

    @field_validator("argv")
    @classmethod
    def _plain_args(cls, argv: list[str]) -> list[str]:
        # These become a systemd ExecStart line, where spaces, quotes, '$' and '%' have meaning.
        for arg in argv:
            if not _SERVICE_ARG.match(arg):
                raise ValueError(f"service argument {arg!r} may use only letters, digits and = _ . , : / + @ -")
        return argv

    def key(self) -> str:
        return self.name


_SERVICE_ARG = re.compile(r"^[A-Za-z0-9=_.,:/+@-]+$")


class CommandSpec(ResourceBase):
    kind: Literal["command"] = "command"

    @model_validator(mode="before")
    @classmethod
    def _no_removal(cls, data: Any) -> Any:
        if isinstance(data, dict) and "state" in data:
            raise ValueError(
                "a command has no state to remove: what it did cannot be undone by provision; drop the command "
                "and declare what it created (a file, a directory) with state: absent")
        return data

    name: Name
    argv: list[str] = Field(min_length=1)
    creates: RelativePath | None = Field(default=None, description="Skip when this path exists.")
    unless: list[str] | None = Field(default=None, description="Skip when this argv exits 0.")
    cwd: RelativePath | None = None
    env: dict[EnvKey, EnvValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _guarded(self) -> CommandSpec:
        if self.creates is None and self.unless is None:
            raise ValueError(
                "a command resource needs a guard ('creates' or 'unless') so a second apply does not re-run it;"
                " use a handler for commands that should run on change"
            )
        return self

    def key(self) -> str:
        return self.name


ResourceSpec = Annotated[
    DirectorySpec | FileSpec | EnvFileSpec | VenvSpec | PipSpec | RequirementsSpec | GitSpec | CommandSpec
    | DownloadSpec | ServiceUnitSpec | WheelBuildSpec,
    Field(discriminator="kind"),
]

RESOURCE_KINDS = (
    "directory", "file", "envfile", "venv", "pip", "requirements", "git", "command", "download", "service",
    "wheel_build",
)


def resource_id(spec: ResourceBase) -> str:
    kind = getattr(spec, "kind")  # noqa: B009 - every concrete spec declares it
    return f"{kind}:{spec.key()}"
