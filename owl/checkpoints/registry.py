"""The model registry: the names users type, and where each model's checkpoint file comes from.

An entry either points at an official checkpoint URL (spec §7; Flax msgpack files in the scenic
bucket) or at a file shipped inside the `owl` package. Downloaded files are cached under
`<cache>/checkpoints/<file name from the URL>`, where `<cache>` is `$OWL_CACHE_DIR`, else
`$XDG_CACHE_HOME/owl`, else `~/.cache/owl`. `$OWL_MODEL_BASE_URL` replaces the official URL prefix,
for mirrors and tests. `resolve(name)` returns a local path, downloading the file when needed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import urllib.parse
from pathlib import Path

from owl.checkpoints.download import DownloadError, check_download, download, read_record
from owl.models.configs import VARIANTS

MODEL_BASE_URL = "https://storage.googleapis.com/scenic-bucket/owl_vit/checkpoints/"
BASE_URL_ENV = "OWL_MODEL_BASE_URL"
CACHE_DIR_ENV = "OWL_CACHE_DIR"

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    """One named model.

    Attributes:
      name: what users type (`owl detect --model NAME`, `owl.load(NAME)`).
      variant: key of `owl.models.configs.VARIANTS` giving the architecture.
      url: where the checkpoint is downloaded from; None for files shipped in the package.
      sha256: expected hex SHA-256 of the file; None when unknown (then nothing is verified).
      size_mib: approximate file size in MiB, for display; None when unknown.
      description: one line for `owl models`.
      package_file: path relative to the `owl` package of a checkpoint shipped with it
        (e.g. "assets/shapes-tiny.safetensors"); None for downloaded models.
      scores: what the model is worth, as (metric, value) pairs: the official LVIS AP and APr
        (percent) for the official checkpoints, measured ShapesWorld AP for shapes-tiny.
      scores_source: where ``scores`` come from.
      params: number of parameters of the variant (tests/checkpoints/test_registry.py checks
        it against `owl.models.owl_vit.param_shapes`).
      forward_s: seconds for one image forward pass on the project's CPU machine, from the
        speed benchmark benchmarks/forward.py (`FORWARD_S`); None (shown as "-") where it has
        not been measured.
    """

    name: str
    variant: str
    url: str | None
    sha256: str | None
    size_mib: int | None
    description: str
    package_file: str | None = None
    scores: tuple[tuple[str, float], ...] = ()
    scores_source: str | None = None
    params: int | None = None
    forward_s: float | None = None  # from benchmarks/forward.py (FORWARD_S)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"registry entry {self.name!r}: unknown variant {self.variant!r}; "
                f"known: {', '.join(sorted(VARIANTS))}"
            )
        if (self.url is None) == (self.package_file is None):
            raise ValueError(
                f"registry entry {self.name!r}: set exactly one of url and package_file"
            )

    @property
    def file_name(self) -> str:
        """Name of the checkpoint file (last component of the URL or of the package path)."""
        if self.url is not None:
            return urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1]
        return Path(self.package_file).name  # type: ignore[arg-type]


#: Source of the official LVIS numbers (the issue #14 text quotes the same table).
LVIS_SOURCE = (
    "scenic owl_vit README (google-research/scenic, scenic/projects/owl_vit), checkpoint table: "
    "LVIS val, official evaluator; 'may differ slightly from paper'"
)
#: Source of shapes-tiny's numbers.
SHAPES_SOURCE = (
    "measured here: `owl shapes reproduce`, held-out ShapesWorld set of 500 images, "
    "48 base / 16 novel categories (docs/shapes.md)"
)

#: Parameter count of each variant (sum over `owl.models.owl_vit.param_shapes`).
PARAMS = {
    "owlvit-b32": 152_838_663,
    "owlvit-b16": 152_396_295,
    "owlvit-l14": 433_102_087,
    "owlv2-b16": 154_573_576,
    "owlv2-l14": 436_824_328,
    "shapes-tiny": 3_583_879,
}

# Seconds per image forward (f32, batch 1, 5 text queries) on the machine named in the file:
# owl/assets/forward_times.json is the one source of these figures (`owl models`' FWD column and
# the README's performance table, which a test keeps equal). L/14 is not measured yet.
_FORWARD = json.loads((_PACKAGE_ROOT / "assets" / "forward_times.json").read_text())
FORWARD_S: dict[str, float] = _FORWARD["owl_s"]
FORWARD_MACHINE: str = _FORWARD["machine"]
FORWARD_COMMAND: str = _FORWARD["command"]


def _official(
    name: str, variant: str, file: str, size_mib: int, description: str, ap: float, apr: float
) -> RegistryEntry:
    return RegistryEntry(
        name=name,
        variant=variant,
        url=MODEL_BASE_URL + file,
        sha256=None,  # the official files publish no checksum
        size_mib=size_mib,
        description=description,
        scores=(("LVIS AP", ap), ("LVIS APr", apr)),
        scores_source=LVIS_SOURCE,
        params=PARAMS[variant],
        forward_s=FORWARD_S.get(variant),
    )


# Files, sizes: spec §7. LVIS AP / APr: spec §6 (README table, official evaluator).
_ENTRIES: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        _official(
            "owlvit-b32", "owlvit-b32", "clip_vit_b32_b0203fc", 583,
            "OWL-ViT B/32, 768 px; LVIS AP 19.3, APr 16.9", 19.3, 16.9,
        ),
        _official(
            "owlvit-b16", "owlvit-b16", "clip_vit_b16_6171dab", 581,
            "OWL-ViT B/16, 768 px; LVIS AP 20.8, APr 17.1", 20.8, 17.1,
        ),
        _official(
            "owlvit-l14", "owlvit-l14", "clip_vit_l14_d83d374", 1652,
            "OWL-ViT L/14, 840 px; LVIS AP 34.6, APr 31.2", 34.6, 31.2,
        ),
        _official(
            "owlv2-b16-st", "owlv2-b16", "owl2-b16-960-st-ngrams_c7e1b9a", 590,
            "OWLv2 B/16 self-trained, 960 px; LVIS AP 26.5, APr 29.5", 26.5, 29.5,
        ),
        _official(
            "owlv2-b16", "owlv2-b16", "owl2-b16-960-st-ngrams-ft-lvisbase_d368398", 590,
            "OWLv2 B/16 self-trained + LVIS-base fine-tuned, 960 px; LVIS AP 41.4, APr 36.2", 41.4, 36.2,
        ),
        _official(
            "owlv2-b16-ensemble", "owlv2-b16",
            "owl2-b16-960-st-ngrams-curated-ft-lvisbase-ens-cold-weight-05_209b65b", 590,
            "OWLv2 B/16 weight ensemble ST/FT (canonical), 960 px; LVIS AP 43.9, APr 40.5", 43.9, 40.5,
        ),
        _official(
            "owlv2-l14-st", "owlv2-l14", "owl2-l14-1008-st-ngrams_0881fd6", 1666,
            "OWLv2 L/14 self-trained, 1008 px; LVIS AP 32.8, APr 34.6", 32.8, 34.6,
        ),
        _official(
            "owlv2-l14", "owlv2-l14", "owl2-l14-1008-st-ngrams-ft-lvisbase_8ca674c", 1666,
            "OWLv2 L/14 self-trained + LVIS-base fine-tuned, 1008 px; LVIS AP 48.8, APr 44.0", 48.8, 44.0,
        ),
        _official(
            "owlv2-l14-ensemble", "owlv2-l14",
            "owl2-l14-1008-st-ngrams-ft-lvisbase-ens-cold-weight-04_8ca674c", 1666,
            "OWLv2 L/14 weight ensemble ST/FT (canonical), 1008 px; LVIS AP 44.6, APr 42.6", 44.6, 42.6,
        ),
        RegistryEntry(
            name="shapes-tiny", variant="shapes-tiny", url=None, sha256=None, size_mib=2,
            description="ShapesWorld detector trained here (`owl shapes reproduce`), 128 px; "
            "base AP50 0.80, novel (zero-shot) AP50 0.56; ships with owl, knows only shapes",
            package_file="assets/shapes-tiny.safetensors.gz",  # docs/shapes.md
            scores=(
                ("ShapesWorld base AP", 50.7), ("ShapesWorld base AP50", 80.4),
                ("ShapesWorld novel AP", 31.9), ("ShapesWorld novel AP50", 56.2),
                ("ShapesWorld one-shot novel AP50", 34.9),
            ),
            scores_source=SHAPES_SOURCE, params=PARAMS["shapes-tiny"],
        ),
    )
}  # fmt: skip


# A cached download up to this size is hashed in full before each use; larger ones have their size
# checked against the download record (cheap), and their hash with `owl models --verify`.
FULL_CHECK_MAX_BYTES = 64 << 20


class CorruptDownloadError(DownloadError):
    """A cached download differs from what was downloaded; the message says how to fetch it anew."""


class UnknownModelError(KeyError):
    """A model name that is not in the registry (the message lists the known names)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def list_entries() -> list[RegistryEntry]:
    """All registry entries, in registry order."""
    return list(_ENTRIES.values())


def get_entry(name: str) -> RegistryEntry:
    """The entry called `name`.

    Raises:
      UnknownModelError (a KeyError): with a close-match suggestion and the known names.
    """
    entry = _ENTRIES.get(name) or _ENTRIES.get(name.strip().lower())
    if entry is not None:
        return entry
    known = list(_ENTRIES)
    close = difflib.get_close_matches(name.strip().lower(), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(known)} (see `owl models`)"
    )


def model_base_url() -> str:
    """Prefix that replaces `MODEL_BASE_URL` in official URLs ($OWL_MODEL_BASE_URL if set)."""
    base = os.environ.get(BASE_URL_ENV) or MODEL_BASE_URL
    return base if base.endswith("/") else base + "/"


def entry_url(entry: RegistryEntry) -> str | None:
    """The URL `entry` is downloaded from, after applying $OWL_MODEL_BASE_URL to official URLs."""
    if entry.url is None or not entry.url.startswith(MODEL_BASE_URL):
        return entry.url
    return model_base_url() + entry.url[len(MODEL_BASE_URL) :]


def cache_dir() -> Path:
    """The owl cache folder: $OWL_CACHE_DIR, else $XDG_CACHE_HOME/owl, else ~/.cache/owl."""
    if value := os.environ.get(CACHE_DIR_ENV):
        return Path(value).expanduser()
    if value := os.environ.get("XDG_CACHE_HOME"):
        return Path(value).expanduser() / "owl"
    return Path.home() / ".cache" / "owl"


def checkpoint_dir() -> Path:
    """Folder holding downloaded checkpoints: `<cache>/checkpoints`."""
    return cache_dir() / "checkpoints"


def cached_path(name: str) -> Path:
    """Where the checkpoint of `name` is or will be once downloaded (package file if shipped)."""
    entry = get_entry(name)
    if entry.package_file is not None:
        return _PACKAGE_ROOT / entry.package_file
    return checkpoint_dir() / entry.file_name


def is_cached(name: str) -> bool:
    """Whether the checkpoint of `name` is available locally without a download."""
    return cached_path(name).is_file()


def redownload_hint(name: str) -> str:
    """How to replace a bad cached file of `name`: delete it (and its record), run again."""
    entry = get_entry(name)
    if entry.package_file is not None:
        return "it ships with owl; reinstall owl (pip install --force-reinstall owl)"
    path = cached_path(name)
    from owl.checkpoints.download import record_path

    return (
        f"delete {path} and {record_path(path).name} beside it, then run the command again to "
        "download it anew (`owl models --verify` checks every cached model)"
    )


def verify_cached(name: str, *, full: bool = False) -> str | None:
    """Why the cached file of `name` is bad, or None (also None when it is not cached).

    Checks a downloaded file against its download record (`owl.checkpoints.download`): the size
    always, the whole SHA-256 when `full` or when the file is small (`FULL_CHECK_MAX_BYTES`),
    and the registry's own SHA-256 where one is known. Package files are not checked here.
    """
    entry = get_entry(name)
    path = cached_path(name)
    if entry.package_file is not None or not path.is_file():
        return None
    full = full or path.stat().st_size <= FULL_CHECK_MAX_BYTES
    return check_download(path, full=full, sha256=entry.sha256)


def is_recorded(name: str) -> bool:
    """Whether the cached file of `name` has a download record (else it was placed by hand)."""
    return read_record(cached_path(name)) is not None


def resolve(name: str, *, progress: bool = True) -> Path:
    """Local path of the checkpoint of `name`, downloading it into the cache when missing.

    A cached file is checked before it is used (`verify_cached`: size, and hash where cheap or
    known in advance), so a damaged download is reported as such, with how to fetch it again.

    Raises:
      UnknownModelError: `name` is not registered.
      FileNotFoundError: a package-shipped file is missing from this installation.
      CorruptDownloadError: the cached file differs from what was downloaded.
      DownloadError, ChecksumError: see `owl.checkpoints.download.download`.
    """
    entry = get_entry(name)
    path = cached_path(name)
    if path.is_file():
        problem = verify_cached(name)
        if problem is not None:
            raise CorruptDownloadError(
                f"{path}: the cached download of {name} is corrupt ({problem}); "
                f"{redownload_hint(name)}"
            )
        return path
    if entry.package_file is not None:
        raise FileNotFoundError(
            f"model {name!r} should ship with owl at {path}, but the file is missing; reinstall owl"
        )
    url = entry_url(entry)
    assert url is not None  # guaranteed by RegistryEntry.__post_init__
    return download(url, path, sha256=entry.sha256, progress=progress)
